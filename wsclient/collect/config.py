"""What a collector collects and how: the feeds, the lease timings, the Redis key prefix; from TOML or from code.

Everything that ends up on the wire or in a Redis key is checked here, at
construction, with an error that names the offending setting.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import wsclient

__all__ = [
    "CLIENT_OPTIONS",
    "DEFAULT_LEASE_TTL",
    "CollectConfig",
    "ConfigError",
    "Feed",
    "OnConnect",
    "load_config",
]

DEFAULT_LEASE_TTL = 5.0
"""Seconds a lease lives without renewal.

Five seconds bounds a failover (a killed owner's feed has its next entry
within about TTL + 0.3 s) while riding out what should not move a feed: a
renewal goes out every TTL / 3 (1.7 s), so an owner loses its feeds only after
about 4.5 s without Redis (two renewals missed, the third too late), which a
Redis restart or a garbage-collection pause does not reach.
"""

CLIENT_OPTIONS = frozenset(
    {
        "transport",
        "open_timeout",
        "close_timeout",
        "max_size",
        "max_queue",
        "compression",
        "subprotocols",
        "idle_timeout",
        "inbox_size",
    }
)
"""The ``wsclient.Client`` options a feed may set in its ``client`` table."""

OnConnect = Callable[[wsclient.Session, "int | None"], Awaitable[None]]
"""Called on every fresh session with the feed's last written sequence number (``None`` when there is none)."""

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}")
_IDENTIFIER = re.compile(r"[^.\s]+")
_PREFIX = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
# RFC 7230 section 3.2: field-name = token; a field value never holds CR, LF or NUL.
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_FORBIDDEN_IN_VALUE = re.compile(r"[\r\n\x00]")


class ConfigError(ValueError):
    """A collector configuration that cannot run; the message names the setting."""


def _redacted(url: str) -> str:
    return wsclient.redact_url(url)


@dataclass(frozen=True)
class Feed:
    """One upstream feed: where it is, how to subscribe, how to tell its messages apart.

    Args:
        name: The feed's name, unique in a config: letters, digits and ``_.:-``
            (it is part of Redis keys).
        url: The ``ws://`` or ``wss://`` URL.
        subscribe: Messages sent on every fresh session, in order, before
            anything else. ``${last_seq}`` in one is replaced by the feed's last
            written sequence number (``null`` when there is none), so an
            upstream that resumes from a sequence number gets it.
        headers: Extra HTTP headers of the handshake.
        sequence_key: The message field that holds its sequence number (a JSON
            object's field; ``a.b`` for a nested one). With it, a number not
            above the last written is dropped as a duplicate and a jump is
            recorded as a gap: exactly once. Without it: at least once.
        reconnect_on_normal_close: Reconnect after a server's 1000 or 1005 too
            (the default: a collector must not end on an upstream's
            shutdown). Only closes the policy calls fatal end the feed.
        client: Further ``wsclient.Client`` options (see :data:`CLIENT_OPTIONS`).
        on_connect: Library only: a coroutine function called after the
            ``subscribe`` messages with the session and the last written
            sequence number.

    Raises:
        ConfigError: A setting is invalid; the message names it.
    """

    name: str
    url: str
    subscribe: Sequence[str] = ()
    headers: Mapping[str, str] = field(default_factory=dict)
    sequence_key: str | None = None
    reconnect_on_normal_close: bool = True
    client: Mapping[str, Any] = field(default_factory=dict)
    on_connect: OnConnect | None = None

    def __post_init__(self) -> None:
        where = f"feed {self.name!r}"
        if not isinstance(self.name, str) or not _NAME.fullmatch(self.name):
            raise ConfigError(f"feed name must be 1-128 letters, digits or _.:- (no leading symbol), got {self.name!r}")
        if not isinstance(self.url, str) or not self.url.startswith(("ws://", "wss://")):
            url = _redacted(self.url) if isinstance(self.url, str) else repr(self.url)
            raise ConfigError(f"{where}: url must start with ws:// or wss://, got {url}")
        if isinstance(self.subscribe, str) or not all(isinstance(m, str) for m in self.subscribe):
            raise ConfigError(f"{where}: subscribe must be a list of strings")
        object.__setattr__(self, "subscribe", tuple(self.subscribe))
        if not isinstance(self.headers, Mapping) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in self.headers.items()
        ):
            raise ConfigError(f"{where}: headers must be a table of strings")
        for header, value in self.headers.items():
            if not _TOKEN.fullmatch(header):
                raise ConfigError(f"{where}: header name {header!r} is not an RFC 7230 token")
            if _FORBIDDEN_IN_VALUE.search(value):
                raise ConfigError(f"{where}: header {header!r}: the value contains CR, LF or NUL")
        object.__setattr__(self, "headers", dict(self.headers))
        if self.sequence_key is not None and (
            not isinstance(self.sequence_key, str)
            or not all(_IDENTIFIER.fullmatch(part) for part in self.sequence_key.split("."))
        ):
            raise ConfigError(f"{where}: sequence_key must be a field name (a.b for a nested one)")
        if not isinstance(self.reconnect_on_normal_close, bool):
            raise ConfigError(f"{where}: reconnect_on_normal_close must be true or false")
        if not isinstance(self.client, Mapping):
            raise ConfigError(f"{where}: client must be a table of wsclient.Client options")
        unknown = sorted(set(self.client) - CLIENT_OPTIONS)
        if unknown:
            raise ConfigError(
                f"{where}: unknown client option {unknown[0]!r} (allowed: {', '.join(sorted(CLIENT_OPTIONS))})"
            )
        object.__setattr__(self, "client", dict(self.client))
        if self.on_connect is not None and not callable(self.on_connect):
            raise ConfigError(f"{where}: on_connect must be a coroutine function")
        try:
            # The client checks what goes on the wire (header names and values, options) at construction.
            wsclient.Client(self.url, **self.client_options(None))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from None

    def __repr__(self) -> str:
        return (
            f"Feed(name={self.name!r}, url={_redacted(self.url)!r}, "
            f"headers={wsclient.redact_headers(self.headers)!r}, sequence_key={self.sequence_key!r})"
        )

    def client_options(self, on_connect: Callable[[wsclient.Session], Awaitable[None]] | None) -> dict[str, Any]:
        """The keyword arguments of this feed's ``wsclient.Client``."""
        options: dict[str, Any] = dict(self.client)
        options["headers"] = dict(self.headers) or None
        options["on_connect"] = on_connect
        options["decode"] = False
        options["max_attempts"] = None
        options["max_outage"] = None
        if self.reconnect_on_normal_close:
            options["close_actions"] = _reconnect_unless_fatal
        return options


def _reconnect_unless_fatal(end: wsclient.SessionEnd) -> wsclient.Action:
    """Reconnect on every close the default policy does not call fatal (1000 and 1005 included)."""
    if wsclient.close_action(end) is wsclient.Action.FATAL:
        return wsclient.Action.FATAL
    return wsclient.Action.RECONNECT


@dataclass(frozen=True)
class CollectConfig:
    """The feeds and the settings every replica of one collector shares.

    Args:
        feeds: The feeds; names unique.
        prefix: Prefix of every Redis key (``PREFIX:stream:FEED`` is a feed's stream).
        lease_ttl: Seconds a feed's lease lives without renewal (see :data:`DEFAULT_LEASE_TTL`).
        drift: Fraction of ``lease_ttl`` kept as a margin: an owner stops writing
            and drops the connection ``lease_ttl * (1 - drift)`` after it sent
            its last successful renewal, by its own monotonic clock.
        tick: Seconds between two looks at the replicas and the leases
            (default ``lease_ttl / 20``).
        max_batch: Most messages in one write (one script call).
        max_pending: Most messages held while Redis does not answer; beyond,
            the oldest are dropped (counted; with a sequence key they show as a gap).
        maxlen: Trim each stream to about this many entries (``XADD MAXLEN ~``); ``None`` keeps all.

    Raises:
        ConfigError: A setting is invalid; the message names it.
    """

    feeds: Sequence[Feed]
    prefix: str = "wsclient:collect"
    lease_ttl: float = DEFAULT_LEASE_TTL
    drift: float = 0.1
    tick: float | None = None
    max_batch: int = 1000
    max_pending: int = 100_000
    maxlen: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "feeds", tuple(self.feeds))
        if not self.feeds or not all(isinstance(feed, Feed) for feed in self.feeds):
            raise ConfigError("feeds must be a non-empty list of Feed")
        names = [feed.name for feed in self.feeds]
        duplicates = sorted({name for name in names if names.count(name) > 1})
        if duplicates:
            raise ConfigError(f"feed names must be unique, {duplicates[0]!r} appears twice")
        if not isinstance(self.prefix, str) or not _PREFIX.fullmatch(self.prefix):
            raise ConfigError(f"prefix must be 1-64 letters, digits or _.:-, got {self.prefix!r}")
        if not _positive(self.lease_ttl):
            raise ConfigError(f"lease_ttl must be a number of seconds > 0, got {self.lease_ttl!r}")
        if not (isinstance(self.drift, int | float) and 0 < self.drift < 0.5):
            raise ConfigError(f"drift must be a fraction between 0 and 0.5, got {self.drift!r}")
        if self.tick is not None and not (_positive(self.tick) and self.tick < self.lease_ttl / 3):
            raise ConfigError(f"tick must be > 0 and below lease_ttl / 3, got {self.tick!r}")
        for name in ("max_batch", "max_pending"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"{name} must be an integer >= 1, got {value!r}")
        if self.maxlen is not None and (not isinstance(self.maxlen, int) or self.maxlen < 1):
            raise ConfigError(f"maxlen must be an integer >= 1 or absent, got {self.maxlen!r}")

    @property
    def renew_interval(self) -> float:
        """Seconds between two renewals of a lease: a third of its TTL."""
        return self.lease_ttl / 3

    @property
    def valid_for(self) -> float:
        """Seconds after sending a successful renewal during which the owner may write."""
        return self.lease_ttl * (1 - self.drift)

    @property
    def tick_interval(self) -> float:
        """Seconds between two looks at the replicas and the leases."""
        return self.tick if self.tick is not None else self.lease_ttl / 20

    def fair_share(self, replicas: int) -> int:
        """The most feeds one of ``replicas`` healthy replicas takes: ``ceil(feeds / replicas)``."""
        return math.ceil(len(self.feeds) / max(1, replicas))


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value) and value > 0


_TOP = {"prefix", "lease_ttl", "drift", "tick", "max_batch", "max_pending", "maxlen"}
_FEED = {"name", "url", "subscribe", "headers", "sequence_key", "reconnect_on_normal_close", "client"}


def load_config(path: str | Path) -> CollectConfig:
    """Read a collector's TOML configuration.

    The file has optional top-level settings (``prefix``, ``lease_ttl``,
    ``drift``, ``tick``, ``max_batch``, ``max_pending``, ``maxlen``) and one
    ``[[feed]]`` table per feed (``name``, ``url``, ``subscribe``,
    ``headers``, ``sequence_key``, ``reconnect_on_normal_close``, and a
    ``client`` table of client options).

    Args:
        path: The file.

    Raises:
        ConfigError: The file cannot be read or parsed, or a setting is invalid.
    """
    try:
        with open(path, "rb") as file:
            data = tomllib.load(file)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from None
    unknown = sorted(set(data) - _TOP - {"feed"})
    if unknown:
        raise ConfigError(f"{path}: unknown setting {unknown[0]!r}")
    tables = data.get("feed", [])
    if not isinstance(tables, list):
        raise ConfigError(f"{path}: feeds are [[feed]] tables")
    feeds = []
    for index, table in enumerate(tables):
        extra = sorted(set(table) - _FEED)
        if extra:
            raise ConfigError(f"{path}: feed #{index + 1}: unknown setting {extra[0]!r}")
        if "name" not in table or "url" not in table:
            raise ConfigError(f"{path}: feed #{index + 1}: name and url are required")
        feeds.append(Feed(**table))
    try:
        return CollectConfig(feeds=feeds, **{key: data[key] for key in _TOP if key in data})
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None
