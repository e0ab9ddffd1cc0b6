"""Helpers to test code that uses wsclient against real servers on loopback."""

from .fault_proxy import FaultProxy
from .flaky_server import FlakyServer, FlakyServerFactory, Handler, Rejection

__all__ = ["FaultProxy", "FlakyServer", "FlakyServerFactory", "Handler", "Rejection"]
