"""What the test servers share about closing a listening socket."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Iterable

__all__ = ["stop_accepting"]


async def stop_accepting(sockets: Iterable[socket.socket]) -> None:
    """Stop accepting on ``sockets``, then let the connections accepted already get their transport.

    Closing an asyncio server between the accept of a connection and the
    making of its transport leaves that socket unclosed (a ``ResourceWarning``
    on Python 3.11): a server that stops under a crowd of clients closes its
    listening sockets only after this.
    """
    loop = asyncio.get_running_loop()
    for sock in sockets:
        loop.remove_reader(sock.fileno())
    await asyncio.sleep(0)
