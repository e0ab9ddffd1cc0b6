"""The redaction functions, row by row: free text, errors and their chains, the libraries' loggers."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest
from websockets.datastructures import Headers
from websockets.exceptions import InvalidStatus, InvalidURI, SecurityError
from websockets.http11 import Response

from wsclient.redact import REDACTED, RedactingLogger, describe_error, redact_error, redact_text

R = REDACTED


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("nothing secret here", "nothing secret here"),
        ("KeyError: 'token'", "KeyError: 'token'"),
        ("/feed?token=abc&page=2", f"/feed?token={R}&page=2"),
        ("GET /x?access_token=abc HTTP/1.1", f"GET /x?access_token={R} HTTP/1.1"),
        ("to ws://bob:pw@h/x?sig=1 now", f"to ws://{R}@h/x?sig={R} now"),
        ("https://h/?password=2&q=1", f"https://h/?password={R}&q=1"),
        (
            "GET / HTTP/1.1\r\nHost: h\r\nAuthorization: Basic eA==\r\n",
            f"GET / HTTP/1.1\r\nHost: h\r\nAuthorization: {R}\r\n",
        ),
        (
            "HTTP/1.1 401\r\nSet-Cookie: id=1\r\nX-Auth-Token: t\r\n",
            f"HTTP/1.1 401\r\nSet-Cookie: {R}\r\nX-Auth-Token: {R}\r\n",
        ),
        ("HTTP/1.1 200\r\nContent-Type: text/plain\r\n", "HTTP/1.1 200\r\nContent-Type: text/plain\r\n"),
    ],
)
def test_redact_text(text: str, expected: str) -> None:
    assert redact_text(text) == expected
    assert redact_text(expected) == expected


def test_describe_error_keeps_the_type_and_redacts_the_message() -> None:
    assert describe_error(KeyError("x")) == "KeyError: 'x'"
    assert describe_error(SecurityError("cannot follow redirect to ws://h/?token=1")) == (
        f"SecurityError: cannot follow redirect to ws://h/?token={R}"
    )


def _raised(error: BaseException, cause: BaseException | None = None) -> BaseException:
    try:
        raise error from cause
    except BaseException as exc:
        return exc


def test_an_error_without_secrets_is_itself() -> None:
    error = _raised(ConnectionRefusedError(111, "refused"), OSError("below"))
    assert redact_error(error) is error


def test_errors_keep_their_type_traceback_and_chain_with_the_text_redacted() -> None:
    response = Response(401, "Unauthorized", Headers({"Set-Cookie": "id=s3cret", "Retry-After": "1"}), b"no")
    status = _raised(InvalidStatus(response))
    uri = _raised(InvalidURI("ws://bob:pw@h/?token=t0k", "bad"), status)
    top = _raised(ValueError("redirect to wss://h/?key=k3y"), uri)
    redacted = redact_error(top)
    assert type(redacted) is ValueError
    assert redacted.__traceback__ is top.__traceback__
    assert isinstance(redacted.__cause__, InvalidURI)
    assert isinstance(redacted.__cause__.__cause__, InvalidStatus)
    assert redacted.__cause__.__cause__.response.status_code == 401
    assert redacted.__cause__.__cause__.response.headers["Retry-After"] == "1"
    chain = [redacted, redacted.__cause__, redacted.__cause__.__cause__]
    text = " ".join(f"{e} {e!r}" for e in chain)
    for secret in ("s3cret", "pw", "t0k", "k3y"):
        assert secret not in text
    # The originals are untouched.
    assert "k3y" in str(top)
    assert "s3cret" in repr(status)


def test_a_cycle_in_the_chain_ends() -> None:
    first = ValueError("ws://h/?token=1")
    second = ValueError("ws://h/?token=2")
    first.__context__, second.__context__ = second, first
    redacted = redact_error(first)
    assert "token=1" not in str(redacted)
    assert redacted.__context__ is not None


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def library_logger() -> Iterator[tuple[logging.Logger, _Records]]:
    logger = logging.getLogger("wsclient.tests.library")
    handler = _Records()
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    logger.propagate = False
    yield logger, handler
    logger.removeHandler(handler)


def test_the_library_logger_redacts_headers_requests_and_urls(library_logger: tuple[logging.Logger, _Records]) -> None:
    logger, handler = library_logger
    # websockets wraps the logger it is given in an adapter of its own, with an extra of its own.
    wrapped = logging.LoggerAdapter(RedactingLogger(logger), {"websocket": "connection"})
    wrapped.debug("> GET %s HTTP/1.1", "/feed?token=t0k")
    wrapped.debug("> %s: %s", "Authorization", "Basic eA==")
    wrapped.debug("> %s: %s", "Accept", "text/plain")
    wrapped.debug("Send upgrade request: %s", b"GET /?key=k3y HTTP/1.1\r\nCookie: c00k\r\n\r\n")
    wrapped.info("%s replied with HTTP redirect to %s", "ws://bob:pw@h/", "ws://h/?secret=s")
    messages = [record.getMessage() for record in handler.records]
    assert messages == [
        f"> GET /feed?token={R} HTTP/1.1",
        f"> Authorization: {R}",
        "> Accept: text/plain",
        "Send upgrade request: " + repr(f"GET /?key={R} HTTP/1.1\r\nCookie: {R}\r\n\r\n".encode()),
        f"ws://{R}@h/ replied with HTTP redirect to ws://h/?secret={R}",
    ]
    assert all(record.websocket == "connection" for record in handler.records)  # type: ignore[attr-defined]
    assert all(record.name == "wsclient.tests.library" for record in handler.records)


def test_the_library_logger_does_nothing_below_its_level(library_logger: tuple[logging.Logger, _Records]) -> None:
    logger, handler = library_logger
    logger.setLevel(logging.INFO)
    RedactingLogger(logger).debug("> %s: %s", "Authorization", "Basic eA==")
    assert handler.records == []
