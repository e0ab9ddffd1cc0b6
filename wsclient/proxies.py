"""Which proxy a connection goes through: one answer for both transports.

``Client(proxy=...)`` takes ``True`` (the default: follow the environment), a
proxy URL, or ``None`` (connect directly). The environment is read here, by
one function, and the transports are handed the resolved URL or ``None``:
websockets and picows would otherwise each apply a rule of their own (or, for
picows, none), and the same configuration would take a different network path
per transport.
"""

from __future__ import annotations

import importlib.util
import urllib.request
from typing import Literal, TypeAlias
from urllib.parse import urlsplit

__all__ = [
    "PROXY_SCHEMES",
    "ProxySetting",
    "check_proxy",
    "proxy_for_url",
    "proxy_from_environment",
    "redact_proxy",
]

ProxySetting: TypeAlias = str | Literal[True] | None
"""``True``: the environment decides; a URL: that proxy; ``None``: no proxy."""

PROXY_SCHEMES: dict[str, tuple[str, ...]] = {
    "websockets": ("http", "https", "socks5h", "socks5", "socks4a", "socks4"),
    # python-socks, under picows, resolves names through a SOCKS5 proxy (socks5h) and cannot do SOCKS4a.
    "picows": ("http", "https", "socks5h", "socks5", "socks4"),
}
"""The proxy URL schemes each transport can connect through."""

_SOCKS_SCHEMES = frozenset({"socks5h", "socks5", "socks4a", "socks4"})

_ENVIRONMENT_ORDER = {
    # RFC 6455 section 4.1 prefers a SOCKS proxy, then the one for HTTPS (a CONNECT tunnel); as websockets and
    # httpx do, ``all_proxy`` comes last.
    True: ("wss", "socks", "https", "all"),
    False: ("ws", "socks", "https", "http", "all"),
}


def redact_proxy(proxy: str) -> str:
    """``proxy`` with its credentials replaced: ``http://[redacted]@host:3128``."""
    scheme, separator, rest = proxy.partition("://")
    if not separator or "@" not in rest:
        return proxy
    return f"{scheme}://[redacted]@{rest.rpartition('@')[2]}"


def check_proxy(proxy: object, transport: str, name: str = "proxy") -> None:
    """Raise naming ``name`` unless ``proxy`` is ``True``, ``None`` or a proxy URL ``transport`` can use.

    A SOCKS URL needs its port (there is no default worth guessing), a URL
    carries nothing but scheme, credentials, host and port, and credentials
    come in pairs. The error never repeats the credentials.

    Raises:
        TypeError: ``proxy`` is neither ``True``, ``None`` nor a ``str``.
        ValueError: the URL is malformed or its scheme is not one ``transport`` supports.
    """
    if proxy is None or proxy is True:
        return
    if not isinstance(proxy, str):
        raise TypeError(f"{name} must be a proxy URL, True (from the environment) or None, got {type(proxy).__name__}")
    shown = redact_proxy(proxy)
    if any(c in proxy for c in "\r\n\0 \t"):
        raise ValueError(f"{name} must not contain whitespace or control characters: {shown!r}")
    try:
        parts = urlsplit(proxy)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"{name} is not a valid URL ({exc}): {shown!r}") from None
    schemes = PROXY_SCHEMES[transport]
    if parts.scheme not in schemes:
        raise ValueError(
            f"{name} scheme {parts.scheme or '(none)'!r} is not supported by transport={transport!r}; "
            f"use one of {', '.join(s + '://' for s in schemes)}"
        )
    if not parts.hostname:
        raise ValueError(f"{name} has no host: {shown!r}")
    if parts.path not in ("", "/") or parts.query or parts.fragment:
        raise ValueError(f"{name} must be scheme://[user:password@]host[:port], without a path or query: {shown!r}")
    if parts.scheme in _SOCKS_SCHEMES and port is None:
        raise ValueError(f"{name} needs a port for a SOCKS proxy, e.g. {parts.scheme}://{parts.hostname}:1080")
    if (
        parts.scheme in _SOCKS_SCHEMES
        and transport == "websockets"
        and importlib.util.find_spec("python_socks") is None
    ):
        raise ValueError(f"{name}: a SOCKS proxy needs python-socks: pip install 'wsclient-resilient[socks]'")
    if parts.username is not None and parts.password is None:
        raise ValueError(f"{name} has a user name but no password: {shown!r}")


def proxy_from_environment(url: str) -> str | None:
    """The proxy the environment asks for to reach ``url``, or ``None``.

    Reads ``wss_proxy``/``ws_proxy``, ``socks_proxy``, ``https_proxy``,
    ``http_proxy`` (for ``ws://`` only) and ``all_proxy``, in that order, and
    ``no_proxy`` (host names, domain suffixes, ``*``), in lower or upper
    case, through :func:`urllib.request.getproxies` as websockets and httpx do.
    """
    parts = urlsplit(url)
    secure = parts.scheme == "wss"
    host = parts.hostname or ""
    port = parts.port or (443 if secure else 80)
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    if urllib.request.proxy_bypass(authority):
        return None
    proxies = urllib.request.getproxies()
    for scheme in _ENVIRONMENT_ORDER[secure]:
        proxy = proxies.get(scheme)
        if proxy:
            if scheme == "socks" and proxy.startswith("http://"):
                # A SOCKS proxy declared by the operating system comes as http://host:port.
                proxy = "socks5h://" + proxy[len("http://") :]
            return proxy
    return None


def proxy_for_url(setting: ProxySetting, url: str) -> str | None:
    """The proxy URL to connect to ``url`` through, or ``None`` for a direct connection."""
    if setting is True:
        return proxy_from_environment(url)
    return setting
