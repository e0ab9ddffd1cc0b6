"""Wrong arguments fail at construction with a message that names the argument."""

from __future__ import annotations

import ssl
from typing import Any

import pytest

import wsclient

URL = "ws://127.0.0.1:9"


@pytest.mark.parametrize(
    ("url", "error", "match"),
    [
        ("http://example.com", ValueError, "url must start with ws:// or wss://"),
        ("example.com/feed", ValueError, "url must start with ws://"),
        ("ws://", ValueError, "url has no host"),
        ("ws://host:99999", ValueError, "url is not a valid URL"),
        (42, TypeError, "url must be a str"),
        (None, TypeError, "url must be a str"),
    ],
)
def test_bad_url(url: Any, error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        wsclient.Client(url)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"open_timeout": -1}, ValueError, "open_timeout"),
        ({"open_timeout": 0}, ValueError, "open_timeout"),
        ({"close_timeout": -1}, ValueError, "close_timeout"),
        ({"close_timeout": None}, TypeError, "close_timeout"),
        ({"idle_timeout": 0}, ValueError, "idle_timeout"),
        ({"idle_timeout": "5"}, TypeError, "idle_timeout"),
        ({"max_outage": -3}, ValueError, "max_outage"),
        ({"max_attempts": 0}, ValueError, "max_attempts"),
        ({"max_attempts": 1.5}, TypeError, "max_attempts"),
        ({"max_buffered": -1}, ValueError, "max_buffered"),
        ({"max_buffered": 2.0}, TypeError, "max_buffered"),
        ({"inbox_size": 0}, ValueError, "inbox_size"),
        ({"max_size": 0}, ValueError, "max_size"),
        ({"max_queue": 0}, ValueError, "max_queue"),
        ({"overflow": "ignore"}, ValueError, "overflow"),
        ({"compression": "gzip"}, ValueError, "compression"),
        ({"backoff": {"initial": 1}}, TypeError, "backoff"),
        ({"heartbeat": 20}, TypeError, "heartbeat"),
        ({"on_connect": "subscribe"}, TypeError, "on_connect"),
        ({"on_message": 1}, TypeError, "on_message"),
        ({"classify_error": object()}, TypeError, "classify_error"),
        ({"headers": [("a", "b")]}, TypeError, "headers"),
        ({"subprotocols": "chat"}, TypeError, "subprotocols"),
        ({"ssl": True}, TypeError, "ssl"),
        ({"ssl": ssl.create_default_context()}, ValueError, "ssl is given but url is ws://"),
        ({"reconnect_on_normal_close": 1}, TypeError, "reconnect_on_normal_close"),
        ({"decode": "no"}, TypeError, "decode must be a bool"),
        ({"text": True, "decode": False}, ValueError, "text=True and decode=False contradict"),
        ({"close_actions": {999: "stop"}}, ValueError, "close_actions key"),
        ({"close_actions": {4001: "retry"}}, ValueError, r"close_actions\[4001\]"),
        ({"close_actions": [(4001, "stop")]}, TypeError, "close_actions"),
    ],
)
def test_bad_argument_names_it(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        wsclient.Client(URL, **kwargs)


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"interval": 0}, ValueError, "interval"),
        ({"timeout": -1}, ValueError, "timeout"),
        ({"interval": "20"}, TypeError, "interval"),
        ({"message": 42}, TypeError, "message"),
        ({"missed_pongs": 0}, ValueError, "missed_pongs"),
        ({"missed_pongs": 2.5}, TypeError, "missed_pongs"),
    ],
)
def test_bad_heartbeat_names_it(kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        wsclient.Heartbeat(**kwargs)


def test_good_arguments_are_kept() -> None:
    client = wsclient.Client(
        "wss://example.com/feed?x=1",
        close_actions={4001: "reconnect", 4002: wsclient.Action.FATAL},
        heartbeat=None,
        idle_timeout=30,
        max_buffered=0,
        overflow="drop_oldest",
        compression=None,
        max_size=None,
        ssl=ssl.create_default_context(),
    )
    assert client.config.close_actions == {4001: wsclient.Action.RECONNECT, 4002: wsclient.Action.FATAL}
    assert client.state is wsclient.State.IDLE
    assert client.config.heartbeat is None


def test_url_may_be_a_callable() -> None:
    client = wsclient.Client(lambda: URL)
    assert client.state is wsclient.State.IDLE
