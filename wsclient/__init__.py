"""wsclient: a resilient asyncio WebSocket client.

A ``Client`` keeps one WebSocket connection up for weeks: it reconnects with
jittered backoff, tells a deliberate close from a broken one, notices a dead
peer, re-subscribes through ``on_connect`` and never silently loses a send.
"""

from .backoff import Backoff
from .client import Client
from .config import Data
from .errors import (
    BufferFull,
    CallbackError,
    CertificateError,
    ClientClosed,
    FatalCloseError,
    FatalError,
    GaveUp,
    HandshakeError,
    HandshakeRejected,
    ProxyRejected,
    Reconnect,
    RequestInterrupted,
    RequestTimeout,
    WsClientError,
)
from .events import Cause, ClosedBy, SessionEnd, State
from .heartbeat import Heartbeat
from .hooks import StateChange
from .logs import redact_headers, redact_secrets, redact_url
from .policy import Action, close_action, connect_action
from .replies import json_field
from .session import Session
from .stats import Outage, Stats

__version__ = "0.2.0"
"""The version of this package: the one place it is written (the build reads it from here)."""

__all__ = [
    "Action",
    "Backoff",
    "BufferFull",
    "CallbackError",
    "Cause",
    "CertificateError",
    "Client",
    "ClientClosed",
    "ClosedBy",
    "Data",
    "FatalCloseError",
    "FatalError",
    "GaveUp",
    "HandshakeError",
    "HandshakeRejected",
    "ProxyRejected",
    "Heartbeat",
    "Outage",
    "Reconnect",
    "RequestInterrupted",
    "RequestTimeout",
    "Session",
    "SessionEnd",
    "State",
    "StateChange",
    "Stats",
    "WsClientError",
    "close_action",
    "connect_action",
    "json_field",
    "redact_headers",
    "redact_secrets",
    "redact_url",
]
