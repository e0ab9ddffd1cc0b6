"""The collector's parts against a real redis-server: config, leases, fenced writes, gap records, replicas."""

from __future__ import annotations

import asyncio
import contextlib
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from collect_support import (
    SUBSCRIBE,
    RedisServer,
    SequencedFeeds,
    check_stream,
    config_text,
    read_stream,
    wait_until,
)

import wsclient
from wsclient.collect import (
    CollectConfig,
    Collector,
    ConfigError,
    Feed,
    Keys,
    StreamWriter,
    acquire,
    load_config,
    sequence_of,
)
from wsclient.collect.command import build_parser


@pytest.fixture
async def redis_server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    server = RedisServer(tmp_path)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def redis(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(redis_server.url, socket_timeout=2)
    try:
        yield client
    finally:
        await client.aclose()


# -- configuration ---------------------------------------------------------------------------------------------


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "collect.toml"
    path.write_text(text)
    return path


def test_load_config_reads_feeds_and_settings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
lease_ttl = 3.0
prefix = "md"
[[feed]]
name = "trades"
url = "wss://example.com/ws"
subscribe = ['{"op": "subscribe"}']
sequence_key = "data.seq"
headers = { Authorization = "Bearer s3cret" }
[feed.client]
open_timeout = 5.0
transport = "picows"
""",
    )
    config = load_config(path)
    assert config.lease_ttl == 3.0
    assert config.prefix == "md"
    (feed,) = config.feeds
    assert feed.sequence_key == "data.seq"
    assert feed.reconnect_on_normal_close is True
    assert feed.client == {"open_timeout": 5.0, "transport": "picows"}
    assert "s3cret" not in repr(feed)
    assert config.renew_interval == pytest.approx(1.0)
    assert config.valid_for == pytest.approx(2.7)
    assert config.fair_share(5) == 1


@pytest.mark.parametrize(
    ("feed", "named"),
    [
        ('name = "bad name"\nurl = "ws://h/"', "feed name"),
        ('name = "a"\nurl = "http://h/"', "url"),
        ('name = "a"\nurl = "ws://h/"\nheaders = { "X-A" = "1\\r\\nX-B: 2" }', "feed 'a'"),
        ('name = "a"\nurl = "ws://h/"\nheaders = { "Bad Name" = "1" }', "feed 'a'"),
        ('name = "a"\nurl = "ws://h/"\n[feed.client]\nmax_attempts = 3', "max_attempts"),
        ('name = "a"\nurl = "ws://h/"\nsequence_key = ""', "sequence_key"),
        ('name = "a"\nurl = "ws://h/"\ncolour = "red"', "colour"),
    ],
)
def test_load_config_names_the_bad_setting(tmp_path: Path, feed: str, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_config(write(tmp_path, f"[[feed]]\n{feed}\n"))


def test_config_rejects_bad_timings_and_duplicates() -> None:
    feed = Feed("a", "ws://h/")
    with pytest.raises(ConfigError, match="lease_ttl"):
        CollectConfig([feed], lease_ttl=0)
    with pytest.raises(ConfigError, match="drift"):
        CollectConfig([feed], drift=0.7)
    with pytest.raises(ConfigError, match="unique"):
        CollectConfig([feed, Feed("a", "ws://other/")])
    with pytest.raises(ConfigError, match="prefix"):
        CollectConfig([feed], prefix="a b")


def test_url_secrets_stay_out_of_errors_and_reprs() -> None:
    with pytest.raises(ConfigError) as caught:
        Feed("a", "https://user:pw@h/?token=abc")
    assert "pw" not in str(caught.value)
    assert "abc" not in str(caught.value)
    assert "pw" not in repr(Feed("a", "ws://user:pw@h/"))


@pytest.mark.parametrize(
    ("payload", "path", "expected"),
    [
        (b'{"seq": 5}', ("seq",), "5"),
        (b'{"data": {"seq": 7}}', ("data", "seq"), "7"),
        (b'{"seq": "5"}', ("seq",), ""),
        (b'{"seq": true}', ("seq",), ""),
        (b'{"seq": 1.5}', ("seq",), ""),
        (b"[1]", ("seq",), ""),
        (b"not json", ("seq",), ""),
    ],
)
def test_sequence_of(payload: bytes, path: tuple[str, ...], expected: str) -> None:
    assert sequence_of(payload, path) == expected


# -- leases and fenced writes ----------------------------------------------------------------------------------


async def test_a_lease_has_one_holder_and_tokens_only_grow(redis: aioredis.Redis) -> None:
    keys = Keys.of("t", "f")
    first = await acquire(redis, keys, "f", "r1", 10.0, 9.0)
    assert first is not None
    assert await acquire(redis, keys, "f", "r2", 10.0, 9.0) is None
    assert await first.renew(redis, 10.0, 9.0)
    assert await first.release(redis)
    second = await acquire(redis, keys, "f", "r2", 10.0, 9.0)
    assert second is not None
    assert second.token > first.token
    assert second.before_writer is None
    # The former holder can neither extend nor delete the new holder's lease.
    assert not await first.renew(redis, 10.0, 9.0)
    assert not await first.release(redis)
    assert await redis.get(keys.lease) == f"{second.token}|r2".encode()


async def test_tokens_grow_across_a_restart_that_lost_the_data(redis: aioredis.Redis) -> None:
    keys = Keys.of("t", "f")
    before = await acquire(redis, keys, "f", "r1", 10.0, 9.0)
    assert before is not None
    await redis.flushall()
    after = await acquire(redis, keys, "f", "r2", 10.0, 9.0)
    assert after is not None
    assert after.token > before.token


async def test_writes_are_deduplicated_and_holes_recorded(redis: aioredis.Redis) -> None:
    keys = Keys.of("t", "f")
    lease = await acquire(redis, keys, "f", "r1", 10.0, 9.0)
    assert lease is not None
    writer = StreamWriter(redis, lease, "seq")
    assert writer.gap == "start"
    result = await writer.write([(b'{"seq": 1}', 1.0), (b'{"seq": 2}', 2.0), (b'{"seq": 2}', 2.5)])
    assert (result.written, result.duplicates, result.gap_written) == (2, 1, True)
    result = await writer.write([(b'{"seq": 1}', 3.0), (b'{"seq": 5}', 4.0), (b'{"seq": 6}', 5.0)])
    assert (result.written, result.duplicates, result.holes) == (2, 1, 1)
    entries = await read_stream(redis, keys.stream)
    kinds = [fields.get("kind", fields["seq"] if fields["type"] == "msg" else "") for _, fields in entries]
    assert kinds == ["start", "1", "2", "hole", "5", "6"]
    hole = entries[3][1]
    assert (hole["before_seq"], hole["after_seq"], hole["before_owner"], hole["after_owner"]) == ("2", "5", "r1", "r1")
    message = entries[1][1]
    assert message["data"] == '{"seq": 1}'
    assert message["replica"] == "r1"
    assert message["token"] == str(lease.token)
    verdict = check_stream(entries)
    assert verdict.errors == []
    assert verdict.holes == 1


async def test_a_former_owner_is_fenced_even_when_it_believes_it_holds_the_lease(redis: aioredis.Redis) -> None:
    keys = Keys.of("t", "f")
    old = await acquire(redis, keys, "f", "r1", 0.05, 0.04)
    assert old is not None
    old_writer = StreamWriter(redis, old, "seq")
    assert not (await old_writer.write([(b'{"seq": 1}', 1.0)])).fenced

    # Paused past its lease: Redis expired it, so a write is refused, even before anyone took over.
    async with asyncio.timeout(5):
        while await redis.exists(keys.lease):  # noqa: ASYNC110 - waiting for Redis to expire a key
            await asyncio.sleep(0.01)
    assert (await old_writer.write([(b'{"seq": 2}', 2.0)])).fenced

    new = await acquire(redis, keys, "f", "r2", 10.0, 9.0)
    assert new is not None
    new_writer = StreamWriter(redis, new, "seq")
    assert new_writer.gap == "failover"
    assert (await new_writer.write([(b'{"seq": 2}', 3.0)])).written == 1
    # With the former owner's token: refused, counted in Redis.
    assert (await old_writer.write([(b'{"seq": 3}', 4.0), (b'{"seq": 4}', 4.0)])).fenced
    assert await redis.hget(keys.state, "fenced") == b"3"
    entries = await read_stream(redis, keys.stream)
    gap = entries[2][1]
    assert (gap["kind"], gap["before_owner"], gap["after_owner"], gap["before_seq"]) == ("failover", "r1", "r2", "1")
    assert [fields["seq"] for _, fields in entries if fields["type"] == "msg"] == ["1", "2"]


async def test_without_a_sequence_key_every_message_is_written(redis: aioredis.Redis) -> None:
    lease = await acquire(redis, Keys.of("t", "f"), "f", "r1", 10.0, 9.0)
    assert lease is not None
    writer = StreamWriter(redis, lease, None, maxlen=1000)
    result = await writer.write([(b"a", 1.0), (b"a", 1.0), (b"\xff\x00binary", 1.0)])
    assert result.written == 3
    entries = await redis.xrange(lease.keys.stream)
    assert entries[-1][1][b"data"] == b"\xff\x00binary"
    assert entries[-1][1][b"seq"] == b""


# -- replicas --------------------------------------------------------------------------------------------------


def feeds_config(feeds: SequencedFeeds, *, lease_ttl: float = 1.0, **client: object) -> CollectConfig:
    return CollectConfig(
        [
            Feed(
                name,
                feeds.url(name),
                subscribe=[SUBSCRIBE],
                sequence_key="seq",
                client={"open_timeout": 2.0, "close_timeout": 0.5, **client},
            )
            for name in feeds.feeds
        ],
        prefix="t",
        lease_ttl=lease_ttl,
    )


async def owners(redis: aioredis.Redis, config: CollectConfig) -> dict[str, str | None]:
    values = [await redis.get(Keys.of(config.prefix, feed.name).lease) for feed in config.feeds]
    return {
        feed.name: value.decode().partition("|")[2] if value else None
        for feed, value in zip(config.feeds, values, strict=True)
    }


async def last_seq(redis: aioredis.Redis, config: CollectConfig, name: str) -> int:
    value = await redis.hget(Keys.of(config.prefix, name).state, "seq")
    return int(value) if value else 0


@contextlib.asynccontextmanager
async def running(collector: Collector) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(collector.run())
    try:
        yield task
    finally:
        task.cancel()
        # Bounded: a collector that does not stop on cancellation fails the test instead of hanging it.
        async with asyncio.timeout(10):
            with contextlib.suppress(asyncio.CancelledError):
                await task


@pytest.mark.parametrize("transport", ["websockets", "picows"])
async def test_two_replicas_share_the_feeds_and_hand_them_over(
    redis_server: RedisServer, redis: aioredis.Redis, transport: str
) -> None:
    async with SequencedFeeds([f"f{i}" for i in range(4)]) as feeds:
        config = feeds_config(feeds, transport=transport)
        first_redis = aioredis.Redis.from_url(redis_server.url, socket_timeout=1)
        second_redis = aioredis.Redis.from_url(redis_server.url, socket_timeout=1)
        first = Collector(config, first_redis, replica="a")
        second = Collector(config, second_redis, replica="b")
        try:
            async with running(first), running(second) as second_task:

                async def spread() -> bool:
                    # The replicas' own views too: a feed given back is in ``feeds`` until its release is done.
                    if len(first.feeds) != 2 or len(second.feeds) != 2:
                        return False
                    held = list((await owners(redis, config)).values())
                    return held.count("a") == 2 and held.count("b") == 2

                await wait_until(spread, 10, "two feeds each")
                floor = {name: await last_seq(redis, config, name) for name in feeds.feeds}

                async def flowing() -> bool:
                    return all([await last_seq(redis, config, name) > floor[name] + 5 for name in feeds.feeds])

                await wait_until(flowing, 10, "messages from every feed")
                # A replica that leaves gives its leases back: the other takes every feed at once. Count from
                # here: a replica whose first tick saw only itself took more than its share and gave the surplus
                # back once it saw the other (those releases count too).
                released = second.stats.released
                second_task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await second_task
                assert second.stats.released - released == 2
                assert second.feeds == []

                async def all_first() -> bool:
                    return set((await owners(redis, config)).values()) == {"a"}

                await wait_until(all_first, 10, "every feed on the remaining replica")
                floor = {name: await last_seq(redis, config, name) for name in feeds.feeds}
                await wait_until(flowing, 10, "messages after the handover")
        finally:
            await first_redis.aclose()
            await second_redis.aclose()
        for name in feeds.feeds:
            verdict = check_stream(await read_stream(redis, Keys.of("t", name).stream))
            assert verdict.errors == []
            assert verdict.gaps >= 1
        assert first.stats.fenced == 0
        assert second.stats.fenced == 0
        assert first.stats.written + second.stats.written > 0


@pytest.mark.parametrize("code", [1000, None, 1001])
async def test_a_feed_reconnects_after_every_close_but_a_fatal_one(
    redis_server: RedisServer, redis: aioredis.Redis, code: int | None
) -> None:
    async with SequencedFeeds(["f"]) as feeds:
        config = feeds_config(feeds)
        own = aioredis.Redis.from_url(redis_server.url, socket_timeout=1)
        collector = Collector(config, own, replica="a")
        try:
            async with running(collector):
                await wait_until(lambda: _true(collector.stats.gaps == 1), 10, "the first messages written")
                await feeds.close_all(code)

                async def reconnect_recorded() -> bool:
                    entries = await read_stream(redis, Keys.of("t", "f").stream)
                    return "reconnect" in [fields.get("kind") for _, fields in entries]

                await wait_until(reconnect_recorded, 10, "a reconnect gap record")
        finally:
            await own.aclose()
        entries = await read_stream(redis, Keys.of("t", "f").stream)
        assert check_stream(entries).errors == []
        assert feeds.accepted >= 2


async def test_a_fatal_close_stops_the_feed_and_gives_the_lease_back(redis: aioredis.Redis) -> None:
    async with SequencedFeeds(["f"]) as feeds:
        config = feeds_config(feeds)
        collector = Collector(config, redis, replica="a")
        async with running(collector):
            await wait_until(lambda: _true(len(feeds.connections) == 1), 10, "a connection")
            await feeds.close_all(1008)

            async def released() -> bool:
                return collector.stats.released == 1 and (await owners(redis, config))["f"] is None

            await wait_until(released, 10, "the lease given back")
            assert collector.feeds == []


async def _true(value: bool) -> bool:
    return value


async def test_a_replica_that_cannot_reach_redis_drops_its_feeds_before_the_lease_expires(
    redis_server: RedisServer, redis: aioredis.Redis
) -> None:
    from wsclient.testing import FaultProxy

    async with SequencedFeeds(["f"]) as feeds, FaultProxy(redis_server.port) as proxy:
        config = feeds_config(feeds)
        cut_off = aioredis.Redis(host="127.0.0.1", port=proxy.port, socket_timeout=0.3, socket_connect_timeout=0.3)
        collector = Collector(config, cut_off, replica="a")
        try:
            async with running(collector):
                await wait_until(lambda: _true(collector.feeds == ["f"]), 10, "the feed held")
                await wait_until(lambda: _true(collector.stats.written > 5), 10, "messages written")
                proxy.blackhole()
                loop = asyncio.get_running_loop()
                cut = loop.time()
                await wait_until(lambda: _true(collector.feeds == []), 10, "the feed dropped")
                dropped_after = loop.time() - cut
                ttl = await redis.pttl(Keys.of("t", "f").lease)
                # Dropped by its own clock while Redis still held the lease for it.
                assert dropped_after < config.lease_ttl
                assert ttl > 0
                await wait_until(lambda: _true(len(feeds.connections) == 0), 5, "the connection dropped")
                assert collector.stats.lost == 1
        finally:
            proxy.restore()
            await cut_off.aclose()


# -- the command -----------------------------------------------------------------------------------------------


async def test_command_reports_a_bad_config_and_exits_2(tmp_path: Path) -> None:
    path = write(tmp_path, '[[feed]]\nname = "a"\nurl = "http://h/"\n')
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "wsclient.collect",
        str(path),
        "--redis",
        "redis://127.0.0.1:1/0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    assert process.returncode == 2
    assert out == b""
    assert b"url must start with ws://" in err


async def test_command_runs_until_sigterm_and_gives_its_leases_back(
    tmp_path: Path, redis_server: RedisServer, redis: aioredis.Redis
) -> None:
    async with SequencedFeeds(["f1", "f2"]) as feeds:
        path = write(tmp_path, config_text(feeds, lease_ttl=30.0))
        config = load_config(path)
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "wsclient.collect",
            str(path),
            "--redis",
            redis_server.url,
            "--replica",
            "cmd",
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:

            async def held() -> bool:
                return set((await owners(redis, config)).values()) == {"cmd"} and all(
                    [await last_seq(redis, config, name) > 0 for name in feeds.feeds]
                )

            await wait_until(held, 15, "both feeds held and written")
            process.terminate()
            out, _ = await process.communicate()
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert process.returncode == 0
        assert out == b""
        # Released at once (the lease's 30 s TTL did not have to pass).
        assert set((await owners(redis, config)).values()) == {None}
        assert await redis.zrange("t:replicas", 0, -1) == []


def test_add_parser_adds_collect_to_a_command_line() -> None:
    import argparse

    from wsclient.collect import command

    parser = argparse.ArgumentParser(prog="wsclient")
    command.add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["collect", "c.toml", "--redis", "redis://h", "--replica", "r"])
    assert (args.config, args.redis, args.replica, args.run) == ("c.toml", "redis://h", "r", command.run)
    assert build_parser().parse_args(["c.toml", "--redis", "u"]).redis == "u"
    assert wsclient.collect.Collector is Collector


def test_collect_exports_are_honest_and_documented() -> None:
    import inspect

    import wsclient.collect as collect

    assert sorted(collect.__all__) == sorted(set(collect.__all__))
    for name in collect.__all__:
        value = getattr(collect, name)
        if inspect.isclass(value) or inspect.isfunction(value):
            assert inspect.getdoc(value), f"wsclient.collect.{name} has no docstring"


def test_collect_uses_only_the_public_api_and_the_core_never_imports_it() -> None:
    import re
    import subprocess

    package = Path(wsclient.__file__).parent / "collect"
    for source in package.glob("*.py"):
        text = source.read_text()
        assert not re.search(r"^\s*from wsclient\.|^\s*from \.\.|^\s*import wsclient\.", text, re.M), source.name
    check = (
        "import sys, wsclient, wsclient.testing; "
        "assert 'wsclient.collect' not in sys.modules; assert 'redis' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", check], check=True)


async def test_a_replica_stops_whenever_it_is_cancelled(redis_server: RedisServer) -> None:
    # On Python 3.11 redis-py's send (asyncio.wait_for) can return through a cancellation that lands in the same
    # loop step: every loop of the collector must still end. Cancel at many different moments of its work.
    async with SequencedFeeds([f"f{i}" for i in range(4)], interval=0.005) as feeds:
        config = feeds_config(feeds, lease_ttl=0.3)
        own = aioredis.Redis.from_url(redis_server.url, socket_timeout=1)
        try:
            for attempt in range(30):
                collector = Collector(config, own, replica=f"r{attempt}")
                task = asyncio.create_task(collector.run())
                stats = collector.stats
                await wait_until(lambda stats=stats: _true(stats.written > 0), 10, "messages written")
                for _ in range(attempt):
                    await asyncio.sleep(0)
                task.cancel()
                # Not ``await task``: a task that went on after its cancellation would hang the test.
                done, _ = await asyncio.wait({task}, timeout=5)
                assert done, f"attempt {attempt}: the replica went on after it was cancelled: {collector.feeds}"
                assert task.cancelled()
                # Every run ended, a feed taken in the very tick of the cancellation included.
                assert collector.feeds == []
                assert collector.stats.released + collector.stats.lost == collector.stats.acquired
        finally:
            await own.aclose()
