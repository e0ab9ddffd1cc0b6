"""Collector figures: throughput into Redis (fenced script against plain pipelined XADD) and failover time.

    python -m benchmarks.collect [--messages N] [--failovers N]

Failover: two replica processes with the default settings (lease TTL 5 s)
and one feed of 100 messages/s; the owner is SIGKILLed and the time to the
feed's next message entry in its stream is measured (target: TTL + 1 s).

Starts its own redis-server (no persistence) on a free port. Both contenders
write the same 64-byte JSON messages carrying a sequence number, in batches
of 1000, into a fresh stream: ``StreamWriter`` (the collector's path: parse
the sequence number, one script call per batch that checks the lease and the
fencing token, drops duplicates and appends) and redis-py's pipelined
``XADD`` without any check (the reference).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import sys
import tempfile
import time
from pathlib import Path

import redis.asyncio as aioredis
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from wsclient.collect import DEFAULT_LEASE_TTL, Keys, StreamWriter, acquire

BATCH = 1000


def _payloads(count: int) -> list[bytes]:
    payloads = []
    for seq in range(1, count + 1):
        head = json.dumps({"seq": seq, "p": ""})
        payloads.append(json.dumps({"seq": seq, "p": "x" * (64 - len(head))}).encode())
    return payloads


async def _fenced(client: aioredis.Redis, payloads: list[bytes], run: int) -> float:
    lease = await acquire(client, Keys.of("bench", f"fenced{run}"), f"fenced{run}", "bench", 600.0, 590.0)
    assert lease is not None
    writer = StreamWriter(client, lease, "seq")
    now = time.time()
    batches = [[(p, now) for p in payloads[i : i + BATCH]] for i in range(0, len(payloads), BATCH)]
    start = time.perf_counter()
    for batch in batches:
        result = await writer.write(batch)
        assert not result.fenced
    return len(payloads) / (time.perf_counter() - start)


async def _plain(client: aioredis.Redis, payloads: list[bytes], run: int) -> float:
    key = f"bench:plain:{run}"
    now = repr(time.time())
    start = time.perf_counter()
    for i in range(0, len(payloads), BATCH):
        async with client.pipeline(transaction=False) as pipe:
            for payload in payloads[i : i + BATCH]:
                pipe.xadd(key, {"type": "msg", "feed": "plain", "seq": "", "time": now, "data": payload})
            await pipe.execute()
    return len(payloads) / (time.perf_counter() - start)


async def _feed(connection: ServerConnection) -> None:
    """A feed of 100 numbered messages/s that resumes after the subscriber's ``from``."""
    with contextlib.suppress(ConnectionClosed):
        request = json.loads(await connection.recv())
        seq = request.get("from") or 0
        while True:
            seq += 1
            await connection.send(json.dumps({"seq": seq}))
            await asyncio.sleep(0.01)


async def _failover(client: aioredis.Redis, redis_url: str, directory: str) -> float:
    async with serve(_feed, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        config = Path(directory) / "failover.toml"
        config.write_text(
            'prefix = "fo"\n[[feed]]\nname = "f"\n'
            f'url = "ws://127.0.0.1:{port}/"\n'
            """subscribe = ['{"from": ${last_seq}}']\nsequence_key = "seq"\n"""
        )
        processes = {
            name: await asyncio.create_subprocess_exec(
                sys.executable, "-m", "wsclient.collect", str(config), "--redis", redis_url, "--replica", name
            )
            for name in ("a", "b")
        }
        try:
            lease = Keys.of("fo", "f").lease
            async with asyncio.timeout(30):
                while not await client.get(lease) or not await client.xlen(Keys.of("fo", "f").stream):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
            owner = (await client.get(lease)).decode().partition("|")[2]
            last = (await client.xrevrange(Keys.of("fo", "f").stream, count=1))[0][0]
            killed = time.time()
            os.kill(processes[owner].pid, signal.SIGKILL)
            await processes[owner].wait()
            async with asyncio.timeout(30):
                while True:
                    entries = await client.xrange(Keys.of("fo", "f").stream, min=f"({last.decode()}")
                    after = [f for _, f in entries if f[b"type"] == b"msg" and f[b"replica"] != owner.encode()]
                    if after:
                        return float(after[0][b"time"]) - killed
                    await asyncio.sleep(0.01)
        finally:
            for process in processes.values():
                if process.returncode is None:
                    process.terminate()
                    await process.wait()
            await client.flushall()


async def main(messages: int, repeats: int, failovers: int) -> None:
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed (apt-get install redis-server)")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    directory = tempfile.mkdtemp()
    process = await asyncio.create_subprocess_exec(
        binary,
        "--port",
        str(port),
        "--bind",
        "127.0.0.1",
        "--save",
        "",
        "--appendonly",
        "no",
        "--dir",
        directory,
        stdout=asyncio.subprocess.DEVNULL,
    )
    client = aioredis.Redis(host="127.0.0.1", port=port)
    try:
        async with asyncio.timeout(10):
            while True:
                try:
                    await client.ping()  # type: ignore[misc]
                    break
                except (OSError, aioredis.ConnectionError):
                    await asyncio.sleep(0.01)
        payloads = _payloads(messages)
        fenced: list[float] = []
        plain: list[float] = []
        for run in range(repeats):
            plain.append(await _plain(client, payloads, run))
            fenced.append(await _fenced(client, payloads, run))
            await client.flushall()
        failover = [await _failover(client, f"redis://127.0.0.1:{port}/0", directory) for _ in range(failovers)]
        fenced_median, plain_median = statistics.median(fenced), statistics.median(plain)
        print("| scenario | contender | msg/s (median) | ratio |")
        print("|---|---|---|---|")
        print(f"| collect 64 B into Redis | plain pipelined XADD (redis-py) | {plain_median:,.0f} | 1.00 |")
        print(
            f"| collect 64 B into Redis | StreamWriter, fenced + dedup script | {fenced_median:,.0f} "
            f"| {fenced_median / plain_median:.2f} |"
        )
        if failover:
            print(
                f"| failover after SIGKILL of the owner (lease TTL {DEFAULT_LEASE_TTL:g} s) | wsclient collect "
                f"| {statistics.median(failover):.2f} s median, {max(failover):.2f} s max of {len(failover)} "
                f"| target {DEFAULT_LEASE_TTL + 1:g} s |"
            )
    finally:
        await client.aclose()
        process.terminate()
        await process.wait()
        shutil.rmtree(directory, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--failovers", type=int, default=3)
    options = parser.parse_args()
    asyncio.run(main(options.messages, options.repeats, options.failovers))
