"""Collector throughput into Redis: fenced, deduplicating script writes against plain pipelined XADD.

    python -m benchmarks.collect [--messages N]

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
import json
import shutil
import socket
import statistics
import tempfile
import time

import redis.asyncio as aioredis

from wsclient.collect import Keys, StreamWriter, acquire

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


async def main(messages: int, repeats: int) -> None:
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
        fenced_median, plain_median = statistics.median(fenced), statistics.median(plain)
        print("| scenario | contender | msg/s (median) | ratio |")
        print("|---|---|---|---|")
        print(f"| collect 64 B into Redis | plain pipelined XADD (redis-py) | {plain_median:,.0f} | 1.00 |")
        print(
            f"| collect 64 B into Redis | StreamWriter, fenced + dedup script | {fenced_median:,.0f} "
            f"| {fenced_median / plain_median:.2f} |"
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
    options = parser.parse_args()
    asyncio.run(main(options.messages, options.repeats))
