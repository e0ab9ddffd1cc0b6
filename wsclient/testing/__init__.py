"""Helpers to test code that uses wsclient against real servers on loopback."""

from .flaky_server import FlakyServer, Rejection
from .proxy import FaultProxy

__all__ = ["FaultProxy", "FlakyServer", "Rejection"]
