"""Chaos with real processes: 3 replicas, 12 sequenced feeds, one Redis; kill, pause, restart, cut off, drop.

The invariant is checked from the streams alone: per feed, sequence numbers
strictly increase (none twice), every hole has its gap record, and no entry
written under a paused replica's tokens lands after its lease passed.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from collect_support import RedisServer, SequencedFeeds, check_stream, config_text, read_stream, wait_until

from wsclient.collect import Keys
from wsclient.testing import FaultProxy

LEASE_TTL = 1.0
FEEDS = [f"f{i:02d}" for i in range(12)]

pytestmark = pytest.mark.timeout(120)


class Replicas:
    def __init__(self, config: Path, logs: Path) -> None:
        self.config = config
        self.logs = logs
        self.processes: dict[str, asyncio.subprocess.Process] = {}

    async def start(self, name: str, url: str) -> None:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: ASYNC230, SIM115 - the child writes it
        try:
            self.processes[name] = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "wsclient.collect",
                str(self.config),
                "--redis",
                url,
                "--replica",
                name,
                "-v",
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log,
            )
        finally:
            log.close()

    def signal(self, name: str, signum: int) -> None:
        os.kill(self.processes[name].pid, signum)

    async def stop_all(self) -> None:
        for process in self.processes.values():
            if process.returncode is None:
                os.kill(process.pid, signal.SIGCONT)
                process.terminate()
        for process in self.processes.values():
            try:
                async with asyncio.timeout(10):
                    await process.wait()
            except TimeoutError:
                process.kill()
                await process.wait()


async def owners(redis: aioredis.Redis) -> dict[str, tuple[str, int] | None]:
    result: dict[str, tuple[str, int] | None] = {}
    for name in FEEDS:
        value = await redis.get(Keys.of("chaos", name).lease)
        if value is None:
            result[name] = None
        else:
            token, _, replica = value.decode().partition("|")
            result[name] = (replica, int(token))
    return result


async def last_seqs(redis: aioredis.Redis) -> dict[str, int]:
    values = [await redis.hget(Keys.of("chaos", name).state, "seq") for name in FEEDS]
    return {name: int(value) if value else 0 for name, value in zip(FEEDS, values, strict=True)}


async def test_replicas_survive_kill_pause_redis_restart_partition_and_drops(tmp_path: Path) -> None:
    server = RedisServer(tmp_path, persist=True)
    await server.start()
    redis = aioredis.Redis.from_url(server.url, socket_timeout=2)
    replicas: Replicas | None = None
    try:
        async with SequencedFeeds(FEEDS, interval=0.02) as feeds, FaultProxy(server.port) as proxy:
            config = tmp_path / "chaos.toml"
            config.write_text(config_text(feeds, lease_ttl=LEASE_TTL, prefix="chaos"))
            replicas = Replicas(config, tmp_path)
            proxied = f"redis://127.0.0.1:{proxy.port}/0"
            await replicas.start("a", server.url)
            await replicas.start("b", server.url)
            await replicas.start("c", proxied)

            async def progressed(since: dict[str, int], feeds_: list[str] = FEEDS) -> bool:
                now = await last_seqs(redis)
                return all(now[name] > since[name] + 3 for name in feeds_)

            async def balanced(names: set[str]) -> bool:
                held = await owners(redis)
                if any(owner is None for owner in held.values()):
                    return False
                counts = {name: 0 for name in names}
                for owner in held.values():
                    assert owner is not None
                    counts[owner[0]] = counts.get(owner[0], 0) + 1
                # No replica over ceil(feeds / replicas) + 1, and every live one holds some.
                return set(counts) == names and all(1 <= count <= 5 for count in counts.values())

            async def every_feed_flows() -> None:
                floor = await last_seqs(redis)
                await wait_until(lambda: progressed(floor), 15, "every feed writing")

            await wait_until(lambda: balanced({"a", "b", "c"}), 20, "12 feeds spread over 3 replicas")
            await every_feed_flows()

            # 1. SIGKILL the owner of f00.
            held = await owners(redis)
            victim = held["f00"]
            assert victim is not None
            replicas.signal(victim[0], signal.SIGKILL)
            await replicas.processes[victim[0]].wait()
            floor = await last_seqs(redis)

            async def taken_over() -> bool:
                owner = (await owners(redis))["f00"]
                return owner is not None and owner[0] != victim[0] and await progressed(floor, ["f00"])

            await wait_until(taken_over, 10, "f00 taken over after SIGKILL")
            restarted = f"{victim[0]}2"
            await replicas.start(restarted, proxied if victim[0] == "c" else server.url)
            live = {"a", "b", "c"} - {victim[0]} | {restarted}
            await wait_until(lambda: balanced(live), 20, "a rejoined replica taking its share")

            # 2. SIGSTOP a replica for longer than its lease, then SIGCONT.
            paused = sorted(live - {"c", "c2"})[0]
            held = await owners(redis)
            paused_tokens = {owner[1] for owner in held.values() if owner is not None and owner[0] == paused}
            paused_feeds = [name for name, owner in held.items() if owner is not None and owner[0] == paused]
            assert paused_tokens
            replicas.signal(paused, signal.SIGSTOP)
            stopped_at = time.time()

            async def moved_away() -> bool:
                now = await owners(redis)
                return time.time() > stopped_at + 2 * LEASE_TTL and all(
                    now[name] is not None and now[name][0] != paused  # type: ignore[index]
                    for name in paused_feeds
                )

            await wait_until(moved_away, 15, "the paused replica's feeds taken over")
            replicas.signal(paused, signal.SIGCONT)
            await wait_until(lambda: balanced(live), 20, "the resumed replica back in its share")
            await every_feed_flows()

            # 3. Redis restart (append-only file: the data survives).
            await server.restart()
            await every_feed_flows()

            # 4. Redis unreachable from the proxied replica only.
            cut = next(name for name in live if name.startswith("c"))
            proxy.blackhole()

            async def cut_off_dropped() -> bool:
                now = await owners(redis)
                return all(owner is not None and owner[0] != cut for owner in now.values())

            await wait_until(cut_off_dropped, 15, "the cut-off replica's feeds taken over")
            await every_feed_flows()
            proxy.restore()
            await wait_until(lambda: balanced(live), 20, "the reconnected replica back in its share")

            # 5. Upstream drops.
            feeds.drop()
            await every_feed_flows()
    finally:
        if replicas is not None:
            await replicas.stop_all()
        try:
            fenced = 0
            lease_end_ms = (stopped_at + LEASE_TTL) * 1000 if "stopped_at" in locals() else None
            late = []
            for name in FEEDS:
                entries = await read_stream(redis, Keys.of("chaos", name).stream)
                verdict = check_stream(entries)
                assert verdict.errors == [], (name, verdict.errors[:5])
                assert verdict.messages > 0
                fenced += int(await redis.hget(Keys.of("chaos", name).state, "fenced") or 0)
                if lease_end_ms is not None:
                    late += [
                        entry_id
                        for entry_id, fields in entries
                        if fields["type"] == "msg"
                        and fields["replica"] == paused
                        and int(fields["token"]) in paused_tokens
                        and int(entry_id.partition("-")[0]) > lease_end_ms
                    ]
            assert late == [], f"entries from the paused replica after its lease passed: {late[:5]}"
            print(f"chaos: fenced writes refused by Redis: {fenced}")
        finally:
            await redis.aclose()
            await server.stop()
