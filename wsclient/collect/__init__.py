"""Highly available collectors: replicas share feeds through Redis leases and write them into Redis Streams.

Each feed is held by one replica at a time under a lease with a fencing
token; every write is a script in Redis that refuses an outdated token and,
with a sequence key, a sequence number already written. Needs the ``redis``
extra (``pip install "wsclient-resilient[redis]"``). See
``docs/collectors-ha.md``.
"""

from .config import DEFAULT_LEASE_TTL, CollectConfig, ConfigError, Feed, load_config
from .lease import Keys, Lease, Membership, acquire
from .runner import Collector, CollectorStats, default_replica_id
from .stream import GAP_KINDS, StreamWriter, WriteResult, sequence_of

__all__ = [
    "DEFAULT_LEASE_TTL",
    "GAP_KINDS",
    "CollectConfig",
    "Collector",
    "CollectorStats",
    "ConfigError",
    "Feed",
    "Keys",
    "Lease",
    "Membership",
    "StreamWriter",
    "WriteResult",
    "acquire",
    "default_replica_id",
    "load_config",
    "sequence_of",
]
