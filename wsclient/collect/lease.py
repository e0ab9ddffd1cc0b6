"""Who owns a feed: a lease in Redis with a fencing token, renewed by compare-and-extend; who is alive.

A lease is ``SET lease TOKEN|REPLICA NX PX ttl``, taken in one script that
also increments the feed's fencing token (``INCR``, so it only grows) and
records it as the feed's current token. Renewal and release compare the
value first, so a replica never extends or deletes a lease it lost.

The holder measures its lease by its own monotonic clock from the moment it
*sent* the acquiring or renewing command; Redis starts the TTL when it
*receives* it, which is later. So the holder's deadline comes first as long
as the two clocks run at rates within ``drift`` of each other; wall clocks
need not agree (nothing compares them across machines).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from . import _scripts

__all__ = ["Keys", "Lease", "Membership", "acquire"]


@dataclass(frozen=True)
class Keys:
    """The Redis keys of one feed (see ``wsclient.collect._scripts`` for what each holds)."""

    lease: str
    token: str
    state: str
    stream: str

    @classmethod
    def of(cls, prefix: str, feed: str) -> Keys:
        """The keys of ``feed`` under ``prefix``; ``{feed}`` is a cluster hash tag."""
        return cls(
            lease=f"{prefix}:lease:{{{feed}}}",
            token=f"{prefix}:token:{{{feed}}}",
            state=f"{prefix}:state:{{{feed}}}",
            stream=f"{prefix}:stream:{{{feed}}}",
        )


def _text(value: Any) -> str | None:
    if value is None:
        return None
    return value.decode() if isinstance(value, bytes) else str(value)


@dataclass
class Lease:
    """A held lease: the fencing token, and until when (loop time) its holder may use it.

    Attributes:
        feed: The feed's name.
        keys: The feed's keys.
        replica: The holder.
        token: The fencing token, above every token of the feed before it.
        valid_until: Loop time after which the holder must not write: the send
            time of the last successful acquire or renew plus ``valid_for``.
        before_seq: The last written sequence number when the lease was taken.
        before_writer: The replica that wrote last before this lease, if any.
    """

    feed: str
    keys: Keys
    replica: str
    token: int
    valid_until: float
    before_seq: str | None = None
    before_writer: str | None = None

    @property
    def value(self) -> str:
        """The lease key's value: ``TOKEN|REPLICA``."""
        return f"{self.token}|{self.replica}"

    def valid(self) -> bool:
        """Whether the holder may still write, by its own clock."""
        return asyncio.get_running_loop().time() < self.valid_until

    async def renew(self, client: aioredis.Redis, ttl: float, valid_for: float) -> bool:
        """Extend the lease if it is still this holder's.

        Args:
            client: The Redis client.
            ttl: The lease's new TTL in seconds, from when Redis runs the script.
            valid_for: Seconds from now (before sending) the holder may write if it succeeds.

        Returns:
            True if extended; False if the lease is gone or someone else's.

        Raises:
            redis.exceptions.RedisError: Redis did not answer (the lease stands until ``valid_until``).
        """
        sent = asyncio.get_running_loop().time()
        extended = await client.eval(_scripts.RENEW, 1, self.keys.lease, self.value, int(ttl * 1000))  # type: ignore[misc]
        if extended:
            self.valid_until = sent + valid_for
        return bool(extended)

    async def release(self, client: aioredis.Redis) -> bool:
        """Delete the lease if it is still this holder's, so another replica can take the feed at once."""
        self.valid_until = 0.0
        return bool(await client.eval(_scripts.RELEASE, 1, self.keys.lease, self.value))  # type: ignore[misc]


async def acquire(
    client: aioredis.Redis, keys: Keys, feed: str, replica: str, ttl: float, valid_for: float
) -> Lease | None:
    """Take a feed's lease if nobody holds it, with a fresh fencing token.

    Args:
        client: The Redis client.
        keys: The feed's keys.
        feed: The feed's name.
        replica: This replica's id.
        ttl: The lease's TTL in seconds.
        valid_for: Seconds from now the new holder may write.

    Returns:
        The lease, or ``None`` if another replica holds it.

    Raises:
        redis.exceptions.RedisError: Redis did not answer.
    """
    sent = asyncio.get_running_loop().time()
    reply = await client.eval(  # type: ignore[misc]
        _scripts.ACQUIRE, 3, keys.lease, keys.token, keys.state, replica, int(ttl * 1000)
    )
    if not reply:
        return None
    value, before_seq, _before_time, before_writer, _before_token = (_text(item) for item in reply)
    assert value is not None
    token = int(value.partition("|")[0])
    return Lease(feed, keys, replica, token, sent + valid_for, before_seq, before_writer)


class Membership:
    """This replica's registration among the healthy replicas: a sorted set scored by expiry (Redis time)."""

    def __init__(self, client: aioredis.Redis, prefix: str, replica: str, ttl: float) -> None:
        self._client = client
        self.key = f"{prefix}:replicas"
        self.replica = replica
        self._ttl_ms = int(ttl * 1000)

    async def beat(self) -> list[str]:
        """Register (or refresh) this replica; return the live replicas, this one included."""
        reply = await self._client.eval(_scripts.HEARTBEAT, 1, self.key, self.replica, self._ttl_ms, "0")  # type: ignore[misc]
        return [name for item in reply if (name := _text(item)) is not None]

    async def leave(self) -> None:
        """Deregister at once, so the others count one replica fewer without waiting for the TTL."""
        await self._client.eval(_scripts.HEARTBEAT, 1, self.key, self.replica, self._ttl_ms, "1")  # type: ignore[misc]
