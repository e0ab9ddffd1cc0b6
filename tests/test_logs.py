"""Logs are data: events asserted as dicts, and no secret ever reaches one."""

from __future__ import annotations

import io
import json
import logging
import subprocess
import sys
from collections.abc import Iterator

import pytest
import structlog
from structlog.testing import capture_logs

import wsclient
from wsclient.logs import (
    LOGGER_NAME,
    REDACTED,
    describe_error,
    get_logger,
    redact_headers,
    redact_secrets,
    redact_url,
)
from wsclient.testing import FlakyServer

URLS = [
    ("wss://feed.example.com/v1", "wss://feed.example.com/v1"),
    ("wss://user:hunter2@feed.example.com/v1", f"wss://{REDACTED}@feed.example.com/v1"),
    ("ws://user@127.0.0.1:8765/", f"ws://{REDACTED}@127.0.0.1:8765/"),
    ("wss://h/?token=abc&channel=trades", f"wss://h/?token={REDACTED}&channel=trades"),
    ("wss://h/?api_key=abc", f"wss://h/?api_key={REDACTED}"),
    ("wss://h/?X-Amz-Signature=abc&X-Amz-Date=1", f"wss://h/?X-Amz-Signature={REDACTED}&X-Amz-Date=1"),
    ("wss://h/?password=p&secret=s", f"wss://h/?password={REDACTED}&secret={REDACTED}"),
    ("wss://h/?access_token=a#frag", f"wss://h/?access_token={REDACTED}"),
    ("ws://[::1]:80/?auth=x", f"ws://[::1]:80/?auth={REDACTED}"),
    ("ws://u:p@[::1]:80/", f"ws://{REDACTED}@[::1]:80/"),
    ("ws://host:notaport/", REDACTED),
    ("ws://u@h:notaport/", REDACTED),
    ("wss://h/p@q?token=a", f"wss://h/p@q?token={REDACTED}"),
]


@pytest.mark.parametrize(("url", "expected"), URLS)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


@pytest.mark.parametrize(("url", "expected"), URLS)
def test_redact_url_twice_changes_nothing(url: str, expected: str) -> None:
    assert redact_url(redact_url(url)) == expected


def test_redact_headers() -> None:
    headers = {
        "Authorization": "Bearer abc",
        "cookie": "sid=1",
        "X-Api-Key": "k",
        "X-Auth-Token": "t",
        "User-Agent": "bot/1.0",
        "Sec-WebSocket-Protocol": "chat",
    }
    assert redact_headers(headers) == {
        "Authorization": REDACTED,
        "cookie": REDACTED,
        "X-Api-Key": REDACTED,
        "X-Auth-Token": REDACTED,
        "User-Agent": "bot/1.0",
        "Sec-WebSocket-Protocol": "chat",
    }


def test_redact_secrets_is_a_structlog_processor() -> None:
    event = {"event": "x", "url": "wss://a:b@h/?token=t", "headers": {"Authorization": "Bearer z"}, "n": 1}
    assert redact_secrets(None, "info", event) == {
        "event": "x",
        "url": f"wss://{REDACTED}@h/?token={REDACTED}",
        "headers": {"Authorization": REDACTED},
        "n": 1,
    }


async def test_no_secret_in_any_event_through_connects_drops_and_rejections(server: FlakyServer) -> None:
    secrets = ("hunter2", "tok-123", "Bearer sekrit")
    url = f"ws://bot:hunter2@127.0.0.1:{server.port}/feed?token=tok-123"
    server.reject_next(503, {"Retry-After": "0"})
    with capture_logs() as events:
        client = wsclient.Client(
            url,
            headers={"X-Api-Key": "Bearer sekrit"},
            backoff=wsclient.Backoff(initial=0.001, maximum=0.01, overload_delay=0.001),
        )
        async with client:
            server.drop()
            await server.wait_for_connections(2)
            await client.wait_open(timeout=5)
    assert server.requests[0].headers.get_all("X-Api-Key") == ["Bearer sekrit"]
    assert server.requests[0].headers.get_all("Authorization") == ["Basic Ym90Omh1bnRlcjI="]
    names = [e["event"] for e in events]
    assert "connect_failed" in names
    assert "retrying" in names
    assert "connected" in names
    assert "disconnected" in names
    dump = repr(events)
    for secret in secrets:
        assert secret not in dump
    assert all(e.get("url", "").startswith(f"ws://{REDACTED}@127.0.0.1") for e in events if "url" in e)


@pytest.mark.parametrize(
    ("exc", "expected"),
    [
        (ConnectionRefusedError(111, "refused"), "ConnectionRefusedError: [Errno 111] refused"),
        (TimeoutError(), "TimeoutError"),
        (
            ValueError("cannot follow redirect to wss://h/x?token=abc"),
            f"ValueError: cannot follow redirect to wss://h/x?token={REDACTED}",
        ),
        (None, None),
    ],
)
def test_describe_error(exc: BaseException | None, expected: str | None) -> None:
    assert describe_error(exc) == expected


async def test_rejection_headers_never_reach_the_logs(server: FlakyServer) -> None:
    server.reject_next(503, {"Set-Cookie": "session=sekrit-cookie", "Retry-After": "0"})
    with capture_logs() as events:
        async with wsclient.Client(server.url, backoff=wsclient.Backoff(initial=0.001, maximum=0.01)):
            pass
    failed = next(e for e in events if e["event"] == "connect_failed")
    assert failed["error"] == "InvalidStatus: server rejected WebSocket connection: HTTP 503"
    assert "sekrit-cookie" not in repr(events)


# Where events go: the application's structlog pipeline if it configured one,
# the standard library's "wsclient" logger otherwise. Each program below runs in
# its own interpreter, so that logging and structlog start unconfigured.

_PROGRAM = """
import asyncio, logging, socket, sys

import structlog

import wsclient

mode = sys.argv[1]
if mode == "basic_info":
    logging.basicConfig(level=logging.INFO)
elif mode == "wsclient_error":
    logging.basicConfig(level=logging.DEBUG)
    logging.getLogger("wsclient").setLevel(logging.ERROR)

# A port bound but not listening refuses connections, and nobody else can take it.
refusing = socket.socket()
refusing.bind(("127.0.0.1", 0))
url = f"ws://bot:hunter2@127.0.0.1:{refusing.getsockname()[1]}/feed?token=sekrit"


async def main() -> None:
    client = wsclient.Client(url, max_attempts=2, backoff=wsclient.Backoff(initial=0.001, maximum=0.01))
    if mode == "structlog_later":
        structlog.configure(
            processors=[structlog.processors.add_log_level, structlog.processors.JSONRenderer()],
            logger_factory=structlog.PrintLoggerFactory(sys.stderr),
        )
    try:
        async with client:
            pass
    except wsclient.GaveUp:
        print("the program's own output")


asyncio.run(main())
"""


def _run_program(mode: str) -> tuple[str, list[str]]:
    done = subprocess.run(
        [sys.executable, "-c", _PROGRAM, mode], capture_output=True, text=True, timeout=30, check=True
    )
    assert "hunter2" not in done.stdout + done.stderr
    assert "sekrit" not in done.stdout + done.stderr
    return done.stdout, done.stderr.splitlines()


def test_without_any_logging_setup_stdout_is_the_programs_and_warnings_reach_stderr() -> None:
    stdout, stderr = _run_program("none")
    assert stdout == "the program's own output\n"
    # logging's last resort: warnings and errors, message only, on stderr.
    assert any(line.startswith("gave_up ") for line in stderr), stderr
    assert not any(line.startswith("connecting ") for line in stderr), stderr  # a debug event
    assert f'url="ws://{REDACTED}@127.0.0.1:' in stderr[-1]


def test_logging_basic_config_shows_info_events_and_not_debug_ones() -> None:
    stdout, stderr = _run_program("basic_info")
    assert stdout == "the program's own output\n"
    assert any(line.startswith("INFO:wsclient:") for line in stderr), stderr
    assert any(line.startswith("ERROR:wsclient:gave_up ") for line in stderr), stderr
    assert not any(line.startswith("DEBUG:") for line in stderr), stderr


def test_the_wsclient_loggers_level_is_honoured() -> None:
    stdout, stderr = _run_program("wsclient_error")
    assert stdout == "the program's own output\n"
    ours = [line for line in stderr if ":wsclient:" in line]
    assert ours
    assert all(line.startswith("ERROR:wsclient:") for line in ours), stderr


def test_structlog_configured_after_the_client_was_created_gets_its_events() -> None:
    stdout, stderr = _run_program("structlog_later")
    assert stdout == "the program's own output\n"
    events = [json.loads(line) for line in stderr]
    assert {event["logger"] for event in events} == {"wsclient"}
    assert "debug" in {event["level"] for event in events}  # structlog's default keeps every level
    gave_up = next(event for event in events if event["event"] == "gave_up")
    assert gave_up["url"].startswith(f"ws://{REDACTED}@127.0.0.1:")


@pytest.fixture
def structlog_unconfigured() -> Iterator[None]:
    """Run a test as an application that never configured structlog, then put the configuration back."""
    was_configured = structlog.is_configured()
    saved = structlog.get_config()
    structlog.reset_defaults()
    yield
    if was_configured:
        structlog.configure(**saved)
    else:
        structlog.reset_defaults()


@pytest.mark.usefixtures("structlog_unconfigured")
def test_stdlib_records_carry_a_one_line_message_and_the_fields_as_attributes(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER_NAME)
    log = get_logger().bind(url="wss://u:p@h/?token=t", name="feed-1")
    log.warning("disconnected", code=1006, reason="", closed_by="server")
    [record] = caplog.records
    assert record.name == "wsclient"
    assert record.levelno == logging.WARNING
    assert record.getMessage() == (
        f'disconnected url="wss://{REDACTED}@h/?token={REDACTED}" name=feed-1 code=1006 reason= closed_by=server'
    )
    fields = vars(record)
    assert fields["event"] == "disconnected"
    assert fields["code"] == 1006
    assert fields["wsclient_name"] == "feed-1"  # a LogRecord attribute of its own is never overwritten
    assert fields["url"] == f"wss://{REDACTED}@h/?token={REDACTED}"


@pytest.mark.usefixtures("structlog_unconfigured")
def test_stdlib_path_passes_the_traceback_to_logging(caplog: pytest.LogCaptureFixture) -> None:
    try:
        raise ValueError("boom")
    except ValueError:
        get_logger().exception("on_message_failed")
    [record] = caplog.records
    assert record.levelno == logging.ERROR
    assert record.exc_info is not None
    assert record.exc_info[0] is ValueError
    assert record.getMessage() == "on_message_failed"


@pytest.mark.usefixtures("structlog_unconfigured")
def test_structlogs_processor_formatter_renders_wsclient_records_as_data() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[structlog.stdlib.add_logger_name, structlog.stdlib.ExtraAdder()],
            processors=[
                structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                structlog.processors.JSONRenderer(),
            ],
        )
    )
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        get_logger().bind(url="ws://h/?key=k").info("connected", session_id="s1")
        get_logger().debug("connecting")  # below the level: dropped before any processing
    finally:
        logger.removeHandler(handler)
        logger.setLevel(logging.NOTSET)
    assert json.loads(stream.getvalue()) == {
        "event": "connected",
        "logger": "wsclient",
        "url": f"ws://h/?key={REDACTED}",
        "session_id": "s1",
    }


async def test_structlog_configured_after_the_client_was_created_in_process(server: FlakyServer) -> None:
    structlog.reset_defaults()
    client = wsclient.Client(server.url)
    with capture_logs() as events:
        async with client:
            pass
    connected = next(e for e in events if e["event"] == "connected")
    assert connected["logger"] == "wsclient"
    assert connected["url"] == server.url
