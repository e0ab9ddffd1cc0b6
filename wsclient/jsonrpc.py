"""JSON-RPC 2.0 over a client or a session: ``await JsonRpc(client).call("eth_blockNumber")``.

Built on the public API alone: a ``Client`` made with ``reply_key=REPLY_KEY``
matches each response to its call by ``id``, by type as well as value (a
response with ``"id": true`` or ``1.0`` answers no call ``1``); notifications and anything else
flow to ``recv()``, iteration or ``on_message`` as usual. Calls made with a
:class:`wsclient.Session` in ``on_connect`` go out on that connection before
buffered sends, which is where subscriptions belong: their ids change with
every connection.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Hashable, Mapping, Sequence
from typing import Any, Protocol

import wsclient
from wsclient.config import Default

__all__ = ["REPLY_KEY", "JsonRpc", "JsonRpcError"]

REPLY_KEY = wsclient.json_field("id")
"""The ``reply_key`` of a client that makes JSON-RPC calls: a response's ``id``."""

_DEFAULT: Any = Default("<the JsonRpc's timeout>")
"""``timeout`` left out of :meth:`JsonRpc.call`: the ``timeout`` the ``JsonRpc`` was made with."""
_ids = itertools.count(1)
"""Ids shared by every ``JsonRpc`` in the process, so two of them on one client never collide."""


class JsonRpcError(wsclient.WsClientError):
    """The server answered a call with a JSON-RPC error object.

    ``code``, ``message`` and ``data`` are the object's members (``data`` is
    ``None`` when absent); ``error`` is the whole object as received. A
    response that is not valid JSON-RPC raises this too, with code -32603: an
    error object whose ``code`` is not an integer (``true`` and ``1.0``
    included) is such a response.

    Args:
        code: The error's ``code``.
        message: The error's ``message``.
        data: The error's ``data``, or ``None``.
        error: The whole error object as received.
    """

    def __init__(self, code: int, message: str, data: Any = None, error: Mapping[str, Any] | None = None) -> None:
        self.code = code
        self.message = message
        self.data = data
        self.error: Mapping[str, Any] = error if error is not None else {"code": code, "message": message}
        super().__init__(f"JSON-RPC error {code}: {message}")


class _Requester(Protocol):
    async def request(self, message: wsclient.Data, *, key: Hashable, timeout: float | None = ...) -> wsclient.Data:  # noqa: ASYNC109
        """What ``Client`` and ``Session`` both offer."""

    async def send(self, message: wsclient.Data) -> None:
        """What ``Client`` and ``Session`` both offer."""


class JsonRpc:
    """JSON-RPC 2.0 calls and notifications through a ``wsclient.Client`` or a ``wsclient.Session``.

    ``timeout`` is the default of :meth:`call`. The client must have been made
    with ``reply_key=REPLY_KEY`` (or another that reads the ``id``).

    Args:
        target: A :class:`wsclient.Client` (with ``reply_key=REPLY_KEY``), or the
            :class:`wsclient.Session` that ``on_connect`` was given.
        timeout: The default ``timeout`` of :meth:`call`, in seconds; ``None``: no limit.

    Raises:
        TypeError: ``target`` has no ``request()``.
    """

    def __init__(self, target: _Requester, *, timeout: float | None = 10.0) -> None:
        if not callable(getattr(target, "request", None)):
            raise TypeError(f"target must be a wsclient.Client or wsclient.Session, got {type(target).__name__}")
        self._target = target
        self._timeout = timeout

    async def call(
        self,
        method: str,
        params: Sequence[Any] | Mapping[str, Any] | None = None,
        *,
        timeout: float | None = _DEFAULT,  # noqa: ASYNC109 - the request's own deadline
    ) -> Any:
        """Call ``method`` and return its ``result``; raise :class:`JsonRpcError` with the error object.

        Raises what ``request()`` raises as well: ``RequestTimeout``,
        ``RequestInterrupted`` (the connection ended: the server may or may
        not have run the method), ``ClientClosed``.

        Args:
            method: The method's name.
            params: Positional (a list) or named (a dict) parameters; ``None``: none.
            timeout: Seconds to wait for the response; ``None``: no limit; left out: the ``JsonRpc``'s.

        Returns:
            The response's ``result``, decoded from JSON.

        Raises:
            JsonRpcError: The server answered with an error object, or with no valid response.
            TypeError: ``method`` is not a ``str``, or ``params`` not a list, a dict or ``None``.
        """
        key = next(_ids)
        reply = await self._target.request(
            _encode(method, params, key), key=key, timeout=self._timeout if timeout is _DEFAULT else timeout
        )
        return _result(reply)

    async def notify(self, method: str, params: Sequence[Any] | Mapping[str, Any] | None = None) -> None:
        """Send a notification: a call without an ``id``, which the server does not answer.

        Args:
            method: The method's name.
            params: Positional (a list) or named (a dict) parameters; ``None``: none.

        Raises:
            TypeError: ``method`` is not a ``str``, or ``params`` not a list, a dict or ``None``.
        """
        await self._target.send(_encode(method, params, None))


def _encode(method: str, params: Sequence[Any] | Mapping[str, Any] | None, key: int | None) -> str:
    if not isinstance(method, str):
        raise TypeError(f"method must be a str, got {type(method).__name__}")
    if params is not None and (isinstance(params, str | bytes) or not isinstance(params, Sequence | Mapping)):
        raise TypeError(f"params must be a list, a dict or None, got {type(params).__name__}")
    document: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if params is not None:
        document["params"] = params if isinstance(params, Mapping) else list(params)
    if key is not None:
        document["id"] = key
    return json.dumps(document)


def _result(reply: wsclient.Data) -> Any:
    try:
        document = json.loads(reply)
    except ValueError:
        raise JsonRpcError(-32603, "response is not JSON") from None
    if not isinstance(document, dict):
        raise JsonRpcError(-32603, "response is not a JSON object")
    if "error" in document:
        error = document["error"]
        # The code must be an integer (JSON-RPC 2.0, section 5.1): neither true nor 1.0.
        if isinstance(error, dict) and type(error.get("code")) is int:
            raise JsonRpcError(error["code"], str(error.get("message", "")), error.get("data"), error)
        raise JsonRpcError(-32603, f"malformed error object: {error!r}")
    if "result" not in document:
        raise JsonRpcError(-32603, "response has neither result nor error")
    return document["result"]
