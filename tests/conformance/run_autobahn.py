"""Run the Autobahn|Testsuite fuzzing server against wsclient on both transports, and the raw libraries beside it.

Usage (from the project root, with the project's virtual environment)::

    .venv/bin/python tests/conformance/run_autobahn.py            # the CI run: case 9 at 1/16, 12.1 and 13.1
    .venv/bin/python tests/conformance/run_autobahn.py --full     # case 9 as published, all of 12 and 13
    .venv/bin/python tests/conformance/run_autobahn.py --docs     # the CI run, then the table in docs/conformance.md

The fuzzing server (``wstest -m fuzzingserver``, Python 2.7) comes from the
environment ``.autobahn-venv`` that ``.ci/run`` installs (``--python`` names
another). It listens on a free port of 127.0.0.1 and runs, for each agent, one
connection per case, each through a client that sends back every message it
is given:

- ``wsclient-websockets``: a ``wsclient.Client`` per case on the websockets transport, permessage-deflate on;
- ``wsclient-picows``: the same on the picows transport;
- ``websockets``: raw websockets' client, the reference;
- ``picows``: raw picows echoing frame by frame, as its own users see the protocol (it leaves UTF-8 and
  reassembly to them).

Cases 1-10 run for every agent, 12 and 13 (permessage-deflate) for the websockets ones (12.1 and 13.1
only, unless ``--full``). The run fails (exit
status 1) when a wsclient agent has a case whose behaviour is FAILED, or whose close behaviour is neither OK
nor INFORMATIONAL, unless raw websockets fails that case too in the same run (such cases are printed with the
reason known for them); on picows, also the few that picows' own parser fails before wsclient sees a frame,
while raw picows fails them too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import re
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Literal

import websockets
from picows import WSFrame, WSListener, WSMsgType, WSTransport, ws_connect

import wsclient

ROOT = Path(__file__).resolve().parents[2]
HERE = Path(__file__).resolve().parent
DEFAULT_PYTHON = ROOT / ".autobahn-venv" / "bin" / "python"
DOCS = ROOT / "docs" / "conformance.md"

ALL_CASES = ["1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*"]
"""Cases 1-10 (there is no 8 in the suite), every agent."""
DEFLATE_CASES = ["12.*", "13.*"]
"""permessage-deflate, for the agents on websockets (picows has no compression): about 11 minutes per agent."""
DEFLATE_CASES_CI = ["12.1.*", "13.1.*"]
"""The part of them a CI run takes (about a minute per agent): compression on messages of every size."""

REFERENCE = "websockets"
CHECKED = ("wsclient-websockets", "wsclient-picows")
AGENTS = ("websockets", "wsclient-websockets", "picows", "wsclient-picows")

KNOWN = {
    "7.1.5": (
        "a text message split in two fragments with a close frame between them: the client answers the close "
        "(1000) while the server expects the message's first fragment to be failed on"
    ),
    "9.3.1": "a message in 64-byte fragments: websockets bounds the fragments of one message (1009 too many fragments)",
    "9.4.1": "a message in 64-byte fragments: websockets bounds the fragments of one message (1009 too many fragments)",
}
"""Why raw websockets fails the cases it fails: they are allowed to wsclient, and listed in the docs."""

PICOWS_PARSER = {
    "7.1.2": (
        "two close frames in one read: picows parses one frame ahead of its listener and fails the connection "
        "(1002) on the second before the listener has seen the first and answered it"
    ),
}
"""Failures of picows' own parser, out of the listener's reach: allowed on picows while raw picows fails them too."""

GOOD_CLOSE = {"OK", "INFORMATIONAL"}
CASE_TIMEOUT = 120.0


def _case_key(case: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case.split("."))


def bad(result: dict[str, Any]) -> bool:
    """Whether Autobahn's verdict on one case is a failure: its behaviour FAILED, or a wrong close."""
    return result["behavior"] == "FAILED" or result["behaviorClose"] not in GOOD_CLOSE


# The echo clients, one connection each.


async def echo_wsclient(url: str, transport: Literal["websockets", "picows"]) -> None:
    """Send back every message a ``wsclient.Client`` delivers, until the session ends (no reconnect)."""
    client: wsclient.Client[str | bytes] = wsclient.Client(
        url,
        transport=transport,
        max_size=None,
        heartbeat=None,
        max_attempts=1,
        close_actions=lambda end: "stop",
        compression="deflate" if transport == "websockets" else None,
        close_timeout=5,
    )
    with contextlib.suppress(wsclient.WsClientError, OSError):
        async with client:
            async for message in client:
                await client.send(message)


async def echo_websockets(url: str) -> None:
    with contextlib.suppress(websockets.ConnectionClosed, OSError):
        async with websockets.connect(url, max_size=None, ping_interval=None, close_timeout=5) as ws:
            async for message in ws:
                await ws.send(message)


class _FrameEcho(WSListener):
    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        kind = frame.msg_type
        if kind is WSMsgType.CLOSE:
            transport.send_close(frame.get_close_code(), frame.get_close_message())
            transport.disconnect()
        elif kind is WSMsgType.TEXT or kind is WSMsgType.BINARY or kind is WSMsgType.CONTINUATION:
            transport.send(kind, frame.get_payload_as_bytes(), frame.fin)


async def echo_picows(url: str) -> None:
    with contextlib.suppress(Exception):
        transport, _ = await ws_connect(_FrameEcho, url)
        await transport.wait_disconnected()


ECHO: dict[str, Callable[[str], Awaitable[None]]] = {
    "websockets": echo_websockets,
    "picows": echo_picows,
    "wsclient-websockets": lambda url: echo_wsclient(url, "websockets"),
    "wsclient-picows": lambda url: echo_wsclient(url, "picows"),
}


async def _text_of(url: str) -> str:
    async with websockets.connect(url) as ws:
        message = await ws.recv()
        return message if isinstance(message, str) else message.decode()


async def run_agent(base: str, agent: str, count: int) -> None:
    """Every case, one connection each, then the reports of this agent written."""
    echo = ECHO[agent]
    for case in range(1, count + 1):
        try:
            async with asyncio.timeout(CASE_TIMEOUT):
                await echo(f"{base}/runCase?case={case}&agent={agent}")
        except TimeoutError:
            print(f"{agent}: case #{case} still running after {CASE_TIMEOUT:.0f} s, left", file=sys.stderr)
    with contextlib.suppress(websockets.ConnectionClosed):
        async with websockets.connect(f"{base}/updateReports?agent={agent}") as ws:
            await ws.wait_closed()


# The fuzzing server.


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _wait_listening(port: int, server: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if server.poll() is not None:
            raise RuntimeError(f"the fuzzing server exited with status {server.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"the fuzzing server did not listen within {timeout:.0f} s") from None
            time.sleep(0.05)


def run(
    python: Path, agents: list[str], scale: float, workdir: Path, deflate: list[str]
) -> dict[str, dict[str, dict[str, Any]]]:
    """Start the fuzzing server, run every agent against it, and return its verdicts: agent -> case -> result."""
    port = _free_port()
    outdir = workdir / "reports"
    spec = {
        "url": f"ws://127.0.0.1:{port}",
        "outdir": str(outdir),
        "cases": ALL_CASES + deflate,
        "exclude-cases": [],
        "exclude-agent-cases": {"*picows": deflate},
    }
    (workdir / "fuzzingserver.json").write_text(json.dumps(spec))
    command = [str(python), str(HERE / "fuzzingserver.py"), str(scale)]
    command += ["--mode", "fuzzingserver", "--spec", str(workdir / "fuzzingserver.json"), "--webport", "0"]
    with (workdir / "fuzzingserver.log").open("wb") as log:
        server = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=workdir)
        try:
            _wait_listening(port, server, 60)
            asyncio.run(_run_agents(f"ws://127.0.0.1:{port}", agents))
        finally:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()
    index: dict[str, dict[str, dict[str, Any]]] = json.loads((outdir / "index.json").read_text())
    return index


async def _run_agents(base: str, agents: list[str]) -> None:
    count = int(await _text_of(f"{base}/getCaseCount"))
    for agent in agents:
        started = time.monotonic()
        await run_agent(base, agent, count)
        print(f"{agent}: {time.monotonic() - started:.1f} s", file=sys.stderr)


# What the reports say.


def summary(results: dict[str, dict[str, Any]], cases: set[str] | None = None) -> Counter[str]:
    """Counts of behaviours, the wrong closes among them, of the cases given (all by default)."""
    counts: Counter[str] = Counter()
    for case, result in results.items():
        if cases is not None and case not in cases:
            continue
        counts["cases"] += 1
        counts[result["behavior"]] += 1
        if result["behaviorClose"] not in GOOD_CLOSE:
            counts["wrong close"] += 1
    return counts


def regressions(index: dict[str, dict[str, dict[str, Any]]]) -> tuple[list[str], list[str]]:
    """The failures of wsclient's agents that raw websockets does not share, and those it shares."""
    reference = index.get(REFERENCE, {})
    raw_picows = index.get("picows", {})
    failed, allowed = [], []
    for agent in CHECKED:
        for case, result in sorted(index.get(agent, {}).items(), key=lambda item: _case_key(item[0])):
            if not bad(result):
                continue
            line = f"{agent} {case}: behavior {result['behavior']}, close {result['behaviorClose']}"
            if case in reference and bad(reference[case]):
                allowed.append(f"{line} (raw websockets too: {KNOWN.get(case, 'reason not documented')})")
            elif agent == "wsclient-picows" and case in PICOWS_PARSER and case in raw_picows and bad(raw_picows[case]):
                allowed.append(f"{line} (raw picows too: {PICOWS_PARSER[case]})")
            else:
                failed.append(line)
    return failed, allowed


def table(index: dict[str, dict[str, dict[str, Any]]]) -> str:
    """The conformance table of docs/conformance.md: one row per agent and group of cases."""
    columns = ["cases", "OK", "NON-STRICT", "INFORMATIONAL", "UNIMPLEMENTED", "FAILED", "wrong close"]
    lines = [
        "| client | cases | run | OK | non-strict | informational | unimplemented | failed | wrong close |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for agent in AGENTS:
        results = index.get(agent)
        if not results:
            continue
        groups = [("1-10", {c for c in results if _case_key(c)[0] <= 10})]
        if any(_case_key(c)[0] >= 12 for c in results):
            groups.append(("12-13", {c for c in results if _case_key(c)[0] >= 12}))
        for name, cases in groups:
            counts = summary(results, cases)
            lines.append(f"| {agent} | {name} | " + " | ".join(str(counts[c]) for c in columns) + " |")
    return "\n".join(lines)


def failures_list(index: dict[str, dict[str, dict[str, Any]]]) -> str:
    """The cases each client fails (behaviour FAILED or a wrong close), for the docs."""
    lines = []
    for agent in AGENTS:
        results = index.get(agent, {})
        cases = sorted((c for c, r in results.items() if bad(r)), key=_case_key)
        if results:
            lines.append(f"- {agent}: {', '.join(cases) if cases else 'none'}")
    return "\n".join(lines)


def write_docs(index: dict[str, dict[str, dict[str, Any]]], scale: float, seconds: float) -> None:
    """Replace what lies between the markers of docs/conformance.md with this run's table."""
    text = DOCS.read_text()
    scale_note = "as published" if scale == 1 else f"at 1/{1 / scale:g} of their published sizes"
    generated = (
        f"<!-- autobahn:begin -->\n{table(index)}\n\nCases 9.1-9.6 (large messages) ran {scale_note}; "
        f"the whole run took {seconds:.0f} s. Cases failed (behaviour FAILED or a wrong close):\n\n"
        f"{failures_list(index)}\n<!-- autobahn:end -->"
    )
    new, found = re.subn(r"<!-- autobahn:begin -->.*?<!-- autobahn:end -->", lambda _: generated, text, flags=re.S)
    if not found:
        raise SystemExit(f"{DOCS}: no <!-- autobahn:begin --> ... <!-- autobahn:end --> markers")
    DOCS.write_text(new)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--full", action="store_true", help="case 9 as published, all of 12 and 13 (about 40 minutes)")
    parser.add_argument("--docs", action="store_true", help="write the table into docs/conformance.md")
    parser.add_argument("--python", type=Path, default=DEFAULT_PYTHON, help="Python 2.7 with autobahntestsuite")
    parser.add_argument("--agent", action="append", choices=AGENTS, help="run only these (default: all)")
    parser.add_argument("--keep", type=Path, help="keep the reports (HTML and JSON) in this directory")
    args = parser.parse_args(argv)
    if not args.python.exists():
        print(f"{args.python} not found: .ci/run installs it (or pass --python)", file=sys.stderr)
        return 2
    # The clients' logs (a server that closes, a connection failed on purpose) are not this run's output.
    logging.getLogger("wsclient").setLevel(logging.CRITICAL)
    logging.getLogger("websockets").setLevel(logging.CRITICAL)
    logging.getLogger("picows").setLevel(logging.CRITICAL)
    agents = args.agent or list(AGENTS)
    scale = 1.0 if args.full else 1 / 16
    started = time.monotonic()
    with contextlib.ExitStack() as stack:
        if args.keep is not None:
            args.keep.mkdir(parents=True, exist_ok=True)
            workdir = args.keep.resolve()
        else:
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="autobahn-")))
        index = run(args.python, agents, scale, workdir, DEFLATE_CASES if args.full else DEFLATE_CASES_CI)
    seconds = time.monotonic() - started
    print(table(index))
    print(f"\n{failures_list(index)}\n\n{seconds:.0f} s")
    failed, allowed = regressions(index)
    for line in allowed:
        print(f"allowed: {line}")
    for line in failed:
        print(f"FAILED: {line}")
    if args.docs:
        write_docs(index, scale, seconds)
    missing = [agent for agent in CHECKED if agent in agents and REFERENCE in agents and not index.get(agent)]
    for agent in missing:
        print(f"FAILED: no report for {agent}")
    return 1 if failed or missing else 0


if __name__ == "__main__":
    sys.exit(main())
