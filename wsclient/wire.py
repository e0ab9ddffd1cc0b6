"""What the client puts on the wire, checked once: the URL, the headers and the subprotocols of the handshake.

Everything that reaches the opening handshake passes through this module,
at construction and again each time a ``url`` or ``headers`` callable
returns, so both transports send the same bytes or refuse the same input
with the same error. The grammar follows the RFCs, with one regex per rule
named after it (as h11's ``_abnf.py`` does):

- a header name is an RFC 7230 ``token``;
- a header value is ``field-content`` restricted to printable ASCII: no
  CR, LF, NUL or other control character, no leading or trailing space, and
  no byte above 0x7E, because websockets would encode it as Latin-1 and
  picows as UTF-8 (send non-ASCII data percent-encoded or base64-encoded);
- a subprotocol is an RFC 6455 ``token`` (RFC 7230's, which has no ``,``);
- a URL is ``ws://`` or ``wss://`` with a host, in ASCII, with no space or
  control character and no ``#fragment`` (RFC 6455 section 3).

Headers that the handshake itself sets (``Host``, ``Upgrade``,
``Connection``, ``Sec-WebSocket-*``) are refused: each transport would send
or replace them differently. Userinfo in the URL (``ws://user:pass@host/``)
never goes into ``Host``: it becomes ``Authorization: Basic``, built here for
both transports (:func:`handshake_target`).
"""

from __future__ import annotations

import base64
import re
from collections.abc import Mapping, Sequence
from urllib.parse import unquote, urlsplit, urlunsplit

__all__ = [
    "RESERVED_HEADERS",
    "check_header",
    "check_headers",
    "check_subprotocols",
    "check_url",
    "handshake_target",
]

# RFC 7230 section 3.2.6: tchar = "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." /
#                                  "^" / "_" / "`" / "|" / "~" / DIGIT / ALPHA; token = 1*tchar
_TCHAR = r"[-!#$%&'*+.^_`|~0-9a-zA-Z]"
TOKEN = re.compile(rf"{_TCHAR}+")
# RFC 7230 section 3.2: field-value = *( field-content ); field-content = field-vchar [ 1*( SP / HTAB ) field-vchar ],
# with field-vchar = VCHAR (0x21-0x7E) here: obs-text (0x80-0xFF) is encoded differently by the two transports.
_VCHAR = r"[\x21-\x7e]"
FIELD_VALUE = re.compile(rf"(?:{_VCHAR}(?:[ \t]*{_VCHAR})*)?")
# RFC 6455 section 4.1: each subprotocol is a token (so no "," separator, no space, not empty).
SUBPROTOCOL = TOKEN
# RFC 3986 characters of an absolute URI once percent-encoded: printable ASCII, no space.
_URI_CHARS = re.compile(r"[\x21-\x7e]*")

RESERVED_HEADERS = frozenset(
    {
        "host",
        "upgrade",
        "connection",
        "content-length",
        "transfer-encoding",
        "sec-websocket-key",
        "sec-websocket-version",
        "sec-websocket-accept",
        "sec-websocket-extensions",
        "sec-websocket-protocol",
    }
)
"""Header names the opening handshake sets itself; passing one in ``headers`` is a ``ValueError``."""


def _show(value: str, limit: int = 40) -> str:
    """A short, printable rendering of a rejected name (never of a value: values may be secrets)."""
    text = ascii(value)
    return text if len(text) <= limit else text[: limit - 4] + "...'"


def check_url(url: object, name: str = "url") -> str:
    """Return ``url`` if the handshake can send it as it is, else raise naming ``name``.

    Args:
        url: a ``ws://`` or ``wss://`` URL with a host.
        name: what to call it in the error (``"url"``, or the callable it came from).

    Returns:
        ``url`` unchanged.

    Raises:
        TypeError: ``url`` is not a ``str``.
        ValueError: another scheme, no host, a bad port, a ``#fragment``, a space, a control
            or non-ASCII character. The message never repeats the URL, which may carry credentials.
    """
    if not isinstance(url, str):
        raise TypeError(f"{name} must be a str or a callable returning one, got {type(url).__name__}")
    if not _URI_CHARS.fullmatch(url):
        raise ValueError(
            f"{name} contains a space, a control character or a non-ASCII character; percent-encode it "
            "(and write a non-ASCII host in its IDNA form)"
        )
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ValueError(f"{name} is not a valid URL (check its host and port)") from None
    if parts.scheme not in ("ws", "wss"):
        raise ValueError(f"{name} must start with ws:// or wss://, got scheme {parts.scheme or '(none)'!r}")
    if not parts.hostname:
        raise ValueError(f"{name} has no host")
    if "#" in url:
        raise ValueError(f"{name} has a #fragment, which a WebSocket URL cannot have (RFC 6455 section 3)")
    return url


def check_header(key: object, value: object, name: str = "headers") -> None:
    """Raise unless ``key: value`` is a header line the handshake may send as it is.

    Args:
        key: the header name: an RFC 7230 token, not one the handshake sets itself.
        value: the header value: a ``str`` of printable ASCII, spaces and tabs between words.
        name: the argument to name in the error.

    Raises:
        TypeError: ``key`` or ``value`` is not a ``str`` (an ``int``, ``None``, ``bytes``).
        ValueError: an invalid or reserved name, or a value with CR, LF, NUL, another control
            character, a non-ASCII character or surrounding whitespace.
    """
    if not isinstance(key, str):
        raise TypeError(f"{name}: header names must be str, got {type(key).__name__} {_show(repr(key))}")
    where = f"{name}[{_show(key)}]"
    if not TOKEN.fullmatch(key):
        raise ValueError(f"{where}: a header name must be an RFC 7230 token (letters, digits, !#$%&'*+-.^_`|~)")
    if key.lower() in RESERVED_HEADERS:
        hint = "pass subprotocols= instead" if key.lower() == "sec-websocket-protocol" else "the handshake sets it"
        raise ValueError(f"{where}: this header cannot be set ({hint})")
    if not isinstance(value, str):
        raise TypeError(f"{where}: header values must be str, got {type(value).__name__}")
    if not FIELD_VALUE.fullmatch(value):
        raise ValueError(
            f"{where}: a header value must be printable ASCII without CR, LF, NUL or other control characters, "
            "and without leading or trailing whitespace"
        )


def check_headers(headers: object, name: str = "headers") -> dict[str, str]:
    """Return ``headers`` as a plain ``dict`` once every line is valid, else raise naming the header.

    Args:
        headers: a mapping of header name to value.
        name: the argument to name in the error.

    Returns:
        A new ``dict`` with the same items.

    Raises:
        TypeError: ``headers`` is not a mapping, or a name or value is not a ``str``.
        ValueError: a name or value the handshake cannot send (see :func:`check_header`).
    """
    if not isinstance(headers, Mapping):
        raise TypeError(f"{name} must be a mapping of str to str, got {type(headers).__name__}")
    checked: dict[str, str] = {}
    for key, value in headers.items():
        check_header(key, value, name)
        checked[key] = value
    return checked


def check_subprotocols(subprotocols: object, name: str = "subprotocols") -> list[str]:
    """Return ``subprotocols`` as a list once each one is an RFC 6455 token, else raise naming it.

    Args:
        subprotocols: a sequence of subprotocol names, in order of preference.
        name: the argument to name in the error.

    Returns:
        A new ``list`` with the same names.

    Raises:
        TypeError: not a sequence of ``str`` (a bare ``str`` included).
        ValueError: an empty name, or one with a space, ``,``, CR, LF or another separator.
    """
    if isinstance(subprotocols, str | bytes) or not isinstance(subprotocols, Sequence):
        raise TypeError(f"{name} must be a sequence of str, got {type(subprotocols).__name__}")
    checked: list[str] = []
    for index, protocol in enumerate(subprotocols):
        if not isinstance(protocol, str):
            raise TypeError(f"{name}[{index}] must be a str, got {type(protocol).__name__}")
        if not SUBPROTOCOL.fullmatch(protocol):
            raise ValueError(
                f"{name}[{index}] = {_show(protocol)} is not an RFC 6455 subprotocol token "
                "(not empty; no space, comma, CR, LF or other separator)"
            )
        checked.append(protocol)
    return checked


def handshake_target(
    url: str, headers: Mapping[str, str] | None, name: str = "url"
) -> tuple[str, dict[str, str] | None]:
    """The URL and headers both transports send: userinfo moved out of the URL into ``Authorization: Basic``.

    ``url`` and ``headers`` must have passed :func:`check_url` and
    :func:`check_headers`. As websockets does, the username and password are
    percent-decoded and encoded as UTF-8 (RFC 7617).

    Args:
        url: the checked URL.
        headers: the checked headers, or ``None``.
        name: the argument to name in the error.

    Returns:
        The URL without userinfo, and the headers with ``Authorization`` added when the URL had userinfo.

    Raises:
        ValueError: the URL has userinfo and ``headers`` has an ``Authorization`` header too.
    """
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None if headers is None else dict(headers)
    if headers is not None and any(key.lower() == "authorization" for key in headers):
        raise ValueError(f"{name} has a username and password, and headers has an Authorization header: pass one")
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    credentials = f"{unquote(user)}:{unquote(password)}".encode()
    authorization = "Basic " + base64.b64encode(credentials).decode("ascii")
    bare = urlunsplit((parts.scheme, hostport, parts.path, parts.query, ""))
    return bare, {**(headers or {}), "Authorization": authorization}
