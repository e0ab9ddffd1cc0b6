"""Logs are data: events asserted as dicts, and no secret ever reaches one."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

import wsclient
from wsclient.logs import REDACTED, describe_error, redact_headers, redact_secrets, redact_url
from wsclient.testing import FlakyServer


@pytest.mark.parametrize(
    ("url", "expected"),
    [
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
    ],
)
def test_redact_url(url: str, expected: str) -> None:
    assert redact_url(url) == expected


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
            headers={"Authorization": "Bearer sekrit"},
            backoff=wsclient.Backoff(initial=0.001, maximum=0.01, overload_delay=0.001),
        )
        async with client:
            server.drop()
            await server.wait_for_connections(2)
            await client.wait_open(timeout=5)
    assert "Bearer sekrit" in server.requests[0].headers.get_all("Authorization")
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
