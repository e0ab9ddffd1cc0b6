"""The client's settings, checked once at construction so a wrong argument fails early and by name."""

from __future__ import annotations

import functools
import importlib.util
import inspect
import ssl as ssl_module
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeAlias
from urllib.parse import urlsplit

from .backoff import Backoff
from .heartbeat import Heartbeat
from .policy import Action, ClosePolicy, ErrorClassifier
from .proxies import ProxySetting, check_proxy, redact_proxy
from .redact import redact_headers, redact_url
from .wire import check_headers, check_subprotocols, check_url, handshake_target

if TYPE_CHECKING:
    from .events import SessionEnd
    from .hooks import OnStateChange
    from .session import Session

__all__ = [
    "ActionName",
    "ClientConfig",
    "CloseActions",
    "Data",
    "HeadersSource",
    "MessageHandler",
    "OnConnect",
    "OnDisconnect",
    "Overflow",
    "UrlSource",
    "DEFAULT_COMPRESSION",
    "Default",
    "check_timeout",
    "check_url",
]

Data: TypeAlias = str | bytes
UrlSource: TypeAlias = str | Callable[[], str | Awaitable[str]]
HeadersSource: TypeAlias = Mapping[str, str] | Callable[[], Mapping[str, str] | Awaitable[Mapping[str, str]]]
OnConnect: TypeAlias = "Callable[[Session], Awaitable[None]]"
OnDisconnect: TypeAlias = "Callable[[SessionEnd], Awaitable[None]]"
MessageHandler: TypeAlias = Callable[[Data], Awaitable[None] | None]
Overflow: TypeAlias = Literal["error", "drop_oldest", "wait"]
ActionName: TypeAlias = Literal["reconnect", "stop", "fatal"]
CloseActions: TypeAlias = Mapping[int, Action | ActionName] | Callable[[Any], "Action | ActionName | None"]
"""Per-code actions, or a callable over the whole ``SessionEnd`` returning an action or ``None`` for the default."""


class Default:
    """A default that depends on other arguments, shown by ``help()`` as what it stands for.

    Args:
        meaning: What ``repr()`` returns, e.g. ``'deflate' (None on picows)``.
    """

    __slots__ = ("_meaning",)

    def __init__(self, meaning: str) -> None:
        self._meaning = meaning

    def __repr__(self) -> str:
        return self._meaning


DEFAULT_COMPRESSION: Any = Default("'deflate' (None on picows)")
"""``compression`` left out: ``"deflate"`` on websockets, ``None`` on picows (which has no permessage-deflate)."""

_OVERFLOWS = ("error", "drop_oldest", "wait")
_COMPRESSIONS = ("deflate", None)
_TRANSPORTS = ("websockets", "picows")


def _number(
    name: str, value: Any, *, minimum: float = 0.0, strict: bool = False, optional: bool = False, finite: bool = False
) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number, got {value!r}")
    if (strict and not value > minimum) or not value >= minimum:
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {value!r}")
    if finite and value == float("inf"):
        raise ValueError(f"{name} must be a finite number of seconds, got {value!r}")


def _integer(name: str, value: Any, *, minimum: int, optional: bool = False) -> None:
    if value is None and optional:
        return
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an int, got {value!r}")
    if value < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {value!r}")


def check_timeout(name: str, value: Any) -> None:
    """Raise naming ``name`` unless ``value`` is a number of seconds > 0, or ``None`` for no limit."""
    _number(name, value, strict=True, optional=True)


def _callable(name: str, value: Any) -> None:
    if value is not None and not callable(value):
        raise TypeError(f"{name} must be callable, got {type(value).__name__}")


def is_async_callable(value: Any) -> bool:
    """Whether calling ``value`` gives a coroutine: an async function, a partial of one, or an async ``__call__``."""
    while isinstance(value, functools.partial):
        value = value.func
    return inspect.iscoroutinefunction(value) or inspect.iscoroutinefunction(getattr(value, "__call__", None))  # noqa: B004


@dataclass(frozen=True, slots=True, repr=False)
class ClientConfig:
    """Every ``Client`` argument, validated; see ``Client`` for what each one means.

    Its ``repr`` shows the URL and the headers with their credentials redacted.
    """

    url: UrlSource
    on_connect: OnConnect | None = None
    on_message: MessageHandler | None = None
    on_disconnect: OnDisconnect | None = None
    on_state_change: OnStateChange | None = None
    reply_key: Callable[[Any], Any] | None = None
    backoff: Backoff = Backoff()
    max_attempts: int | None = None
    max_outage: float | None = None
    heartbeat: Heartbeat | None = Heartbeat()
    idle_timeout: float | None = None
    reconnect_on_normal_close: bool = False
    close_actions: Mapping[int, Action] | ClosePolicy | None = None
    classify_error: ErrorClassifier | None = None
    max_buffered: int = 1024
    overflow: Overflow = "error"
    inbox_size: int = 1024
    open_timeout: float | None = 10.0
    close_timeout: float = 10.0
    headers: HeadersSource | None = None
    subprotocols: Sequence[str] | None = None
    ssl: ssl_module.SSLContext | None = None
    compression: str | None = "deflate"
    max_size: int | None = 2**20
    max_queue: int = 16
    text: bool = False
    decode: bool = True
    transport: str = "websockets"
    proxy: ProxySetting = True

    def __post_init__(self) -> None:
        if self.ssl is not None and not isinstance(self.ssl, ssl_module.SSLContext):
            raise TypeError(f"ssl must be an ssl.SSLContext or None, got {type(self.ssl).__name__}")
        if not callable(self.url):
            url = check_url(self.url)
            if urlsplit(url).scheme == "ws" and self.ssl is not None:
                raise ValueError("ssl is given but url is ws://; use wss:// for TLS")
        _callable("on_connect", self.on_connect)
        if self.on_connect is not None and not is_async_callable(self.on_connect):
            raise TypeError("on_connect must be an async function (async def on_connect(session): ...)")
        _callable("on_disconnect", self.on_disconnect)
        if self.on_disconnect is not None and not is_async_callable(self.on_disconnect):
            raise TypeError("on_disconnect must be an async function (async def on_disconnect(end): ...)")
        _callable("on_state_change", self.on_state_change)
        _callable("reply_key", self.reply_key)
        _callable("on_message", self.on_message)
        _callable("classify_error", self.classify_error)
        if not isinstance(self.backoff, Backoff):
            raise TypeError(f"backoff must be a wsclient.Backoff, got {type(self.backoff).__name__}")
        if self.heartbeat is not None and not isinstance(self.heartbeat, Heartbeat):
            raise TypeError(f"heartbeat must be a wsclient.Heartbeat or None, got {type(self.heartbeat).__name__}")
        _integer("max_attempts", self.max_attempts, minimum=1, optional=True)
        _number("max_outage", self.max_outage, strict=True, optional=True)
        _number("idle_timeout", self.idle_timeout, strict=True, optional=True)
        _number("open_timeout", self.open_timeout, strict=True, optional=True)
        _number("close_timeout", self.close_timeout, strict=True, finite=True)
        _integer("max_buffered", self.max_buffered, minimum=0)
        _integer("inbox_size", self.inbox_size, minimum=1)
        _integer("max_size", self.max_size, minimum=1, optional=True)
        _integer("max_queue", self.max_queue, minimum=1)
        if self.overflow not in _OVERFLOWS:
            raise ValueError(f"overflow must be one of {', '.join(_OVERFLOWS)}, got {self.overflow!r}")
        if self.compression not in _COMPRESSIONS:
            raise ValueError(f"compression must be 'deflate' or None, got {self.compression!r}")
        if self.transport not in _TRANSPORTS:
            raise ValueError(f"transport must be one of {', '.join(_TRANSPORTS)}, got {self.transport!r}")
        check_proxy(self.proxy, self.transport)
        if self.transport == "picows":
            if self.compression is not None:
                raise ValueError("compression='deflate' needs transport='websockets': picows has no permessage-deflate")
            if importlib.util.find_spec("picows") is None:
                raise ValueError("transport='picows' needs picows: pip install 'wsclient[fast]'")
        if not isinstance(self.text, bool):
            raise TypeError(f"text must be a bool, got {self.text!r}")
        if not isinstance(self.decode, bool):
            raise TypeError(f"decode must be a bool, got {self.decode!r}")
        if self.text and not self.decode:
            raise ValueError("text=True and decode=False contradict each other: text=True decodes every message")
        if not isinstance(self.reconnect_on_normal_close, bool):
            raise TypeError(f"reconnect_on_normal_close must be a bool, got {self.reconnect_on_normal_close!r}")
        if self.headers is not None and not (isinstance(self.headers, Mapping) or callable(self.headers)):
            raise TypeError(f"headers must be a mapping or a callable returning one, got {type(self.headers).__name__}")
        if self.headers is not None and not callable(self.headers):
            check_headers(self.headers)
            if not callable(self.url):
                handshake_target(self.url, self.headers)
        if self.subprotocols is not None:
            check_subprotocols(self.subprotocols)
        if self.close_actions is not None and not callable(self.close_actions):
            if not isinstance(self.close_actions, Mapping):
                raise TypeError(
                    "close_actions must be a mapping of close code to wsclient.Action, or a callable over a SessionEnd"
                )
            actions: dict[int, Action] = {}
            for code, action in self.close_actions.items():
                if isinstance(code, bool) or not isinstance(code, int) or not 1000 <= code <= 4999:
                    raise ValueError(f"close_actions key must be a close code 1000-4999, got {code!r}")
                try:
                    actions[code] = Action(action)
                except ValueError:
                    raise ValueError(
                        f"close_actions[{code}] must be a wsclient.Action or one of "
                        f"'reconnect', 'stop', 'fatal', got {action!r}"
                    ) from None
            object.__setattr__(self, "close_actions", actions)

    def __repr__(self) -> str:
        fields = []
        for name in self.__dataclass_fields__:
            value = getattr(self, name)
            if name == "url" and isinstance(value, str):
                value = redact_url(value)
            elif name == "headers" and isinstance(value, Mapping):
                value = redact_headers(value)
            elif name == "proxy" and isinstance(value, str):
                value = redact_proxy(value)
            fields.append(f"{name}={value!r}")
        return f"ClientConfig({', '.join(fields)})"
