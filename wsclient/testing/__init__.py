"""Helpers to test code that uses wsclient against real servers on loopback."""

from .flaky_server import FlakyServer, Rejection

__all__ = ["FlakyServer", "Rejection"]
