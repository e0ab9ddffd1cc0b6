"""Writing a feed's messages into its Redis Stream: one fenced, deduplicating script call per batch.

One stream per feed (``PREFIX:stream:{FEED}``): a consumer reads the feeds it
wants, each in its own order, with its own consumer group and trimming. An
entry is either a message::

    type=msg feed=NAME seq=N time=RECEIVED replica=ID token=T data=PAYLOAD

(``seq`` empty without a sequence key; ``time`` in seconds since the epoch,
by the receiving replica's clock), or a gap record::

    type=gap feed=NAME kind=KIND before_seq before_time before_owner before_token
             after_seq after_time after_owner after_token

written just before the first message after it. ``kind`` is ``start`` (the
first entry of the feed), ``failover`` (the feed changed hands: a new lease),
``reconnect`` (the same owner, a new upstream session) or ``hole`` (sequence
numbers jumped while nothing else happened). The ``before_*`` fields are the
last message written before (empty when none), ``after_*`` the first after.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from . import _scripts
from .lease import Lease

__all__ = ["GAP_KINDS", "StreamWriter", "WriteResult", "sequence_of"]

GAP_KINDS = frozenset({"start", "failover", "reconnect", "hole"})


def sequence_of(payload: bytes | str, path: Sequence[str]) -> str:
    """The sequence number at ``path`` in a JSON message, as decimal text; ``""`` when it has none.

    Only an integer counts (not a bool, a float or a numeric string): anything
    else would make the exactly-once comparison lie.
    """
    try:
        value: Any = json.loads(payload)
    except ValueError:
        return ""
    for key in path:
        if not isinstance(value, dict):
            return ""
        value = value.get(key)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    return ""


@dataclass(frozen=True)
class WriteResult:
    """What Redis did with a batch.

    Attributes:
        fenced: The lease is no longer this writer's: nothing was written.
        written: Messages appended.
        duplicates: Messages dropped because their sequence number was not above the last written.
        holes: Gap records written for a jump in sequence numbers.
        gap_written: The pending gap record (failover, reconnect, start) went in.
    """

    fenced: bool
    written: int = 0
    duplicates: int = 0
    holes: int = 0
    gap_written: bool = False


class StreamWriter:
    """Appends one feed's messages to its stream under a lease; Redis checks the lease and the token.

    Args:
        client: The Redis client.
        lease: The lease the writes are made under.
        sequence_key: The JSON field with the sequence number (``a.b`` nested), or ``None``.
        maxlen: Approximate trimming of the stream, or ``None``.
    """

    def __init__(
        self, client: aioredis.Redis, lease: Lease, sequence_key: str | None = None, maxlen: int | None = None
    ) -> None:
        self._client = client
        self.lease = lease
        self._path = tuple(sequence_key.split(".")) if sequence_key else None
        self._head: list[str | int] = [
            str(lease.token),
            lease.replica,
            lease.feed,
            "" if maxlen is None else str(maxlen),
        ]
        self._keys = [lease.keys.lease, lease.keys.state, lease.keys.stream]
        self._script = client.register_script(_scripts.WRITE)
        self.gap = "start" if lease.before_writer is None else "failover"
        """The gap record that goes before the next message written; ``""`` for none."""

    def mark_gap(self, kind: str) -> None:
        """Record a gap of ``kind`` before the next message (a pending failover or start gap is kept)."""
        if not self.gap:
            self.gap = kind

    async def write(self, batch: Sequence[tuple[bytes, float]]) -> WriteResult:
        """Append ``batch`` (payload, time received) in one script call.

        Raises:
            redis.exceptions.RedisError: Redis did not answer; the batch may or may
                not have been written (with a sequence key, writing it again is safe).
        """
        args: list[Any] = [*self._head, self.gap, len(batch)]
        path = self._path
        append = args.append
        for payload, received in batch:
            append(sequence_of(payload, path) if path else "")
            append(repr(received))
            append(payload)
        reply = await self._script(keys=self._keys, args=args)
        written, duplicates, holes, gap_written = (int(value) for value in reply)
        if written < 0:
            return WriteResult(fenced=True)
        if gap_written:
            self.gap = ""
        return WriteResult(False, written, duplicates, holes, bool(gap_written))
