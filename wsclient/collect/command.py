"""``wsclient collect CONFIG --redis URL``: run one replica until SIGTERM or Ctrl-C.

Exit codes: 0 stopped by a signal (leases given back), 2 usage or
configuration error, 3 Redis refused the connection settings (a bad URL).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import signal
import sys
from typing import Any

import redis.asyncio as aioredis

from ._log import LOGGER_NAME
from .config import ConfigError, load_config
from .runner import Collector

__all__ = ["EXIT_OK", "EXIT_REDIS", "EXIT_USAGE", "add_parser", "build_parser", "run", "serve"]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_REDIS = 3

_HELP = "collect feeds into Redis Streams, sharing them with other replicas through leases"


def _configure(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("config", help="TOML file listing the feeds ([[feed]] tables)")
    parser.add_argument("--redis", required=True, metavar="URL", help="redis://[:password@]host:port/db")
    parser.add_argument("--replica", metavar="ID", help="this replica's unique id (default HOST:PID:RANDOM)")
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more log events (-vv for debug)")
    parser.set_defaults(run=run)
    return parser


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Add the ``collect`` subcommand to an ``argparse`` subparsers object.

    Args:
        subparsers: What ``ArgumentParser.add_subparsers()`` returned.

    Returns:
        The new subparser; its defaults carry ``run``, the function to call with the parsed arguments.
    """
    return _configure(subparsers.add_parser("collect", help=_HELP, description=_HELP))


def build_parser() -> argparse.ArgumentParser:
    """The standalone parser of ``python -m wsclient.collect``."""
    return _configure(argparse.ArgumentParser(prog="python -m wsclient.collect", description=_HELP))


def run(args: argparse.Namespace) -> int:
    """Run one replica with the parsed arguments until SIGTERM or Ctrl-C.

    Args:
        args: Parsed by a parser from :func:`add_parser` or :func:`build_parser`.

    Returns:
        The exit code.
    """
    if not logging.getLogger().handlers and not logging.getLogger(LOGGER_NAME).handlers:
        level = logging.WARNING if args.verbose == 0 else logging.INFO if args.verbose == 1 else logging.DEBUG
        logging.basicConfig(stream=sys.stderr, level=level, format="%(asctime)s %(levelname)s %(message)s")
    return asyncio.run(serve(args))


async def serve(args: argparse.Namespace) -> int:
    """Run one replica in the running event loop until SIGTERM or Ctrl-C; return the exit code.

    Args:
        args: Parsed arguments with ``config``, ``redis`` and ``replica``.

    Returns:
        The exit code.
    """
    try:
        config = load_config(args.config)
    except ConfigError as exc:
        print(f"wsclient collect: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        client = aioredis.Redis.from_url(
            args.redis,
            socket_timeout=config.renew_interval,
            socket_connect_timeout=config.renew_interval,
        )
    except ValueError as exc:
        print(f"wsclient collect: --redis: {exc}", file=sys.stderr)
        return EXIT_REDIS
    try:
        collector = Collector(config, client, replica=args.replica)
    except ValueError as exc:
        print(f"wsclient collect: --replica: {exc}", file=sys.stderr)
        return EXIT_USAGE
    await _main(collector, client)
    return EXIT_OK


async def _main(collector: Collector, client: aioredis.Redis) -> None:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, task.cancel)
    try:
        await collector.run()
    except asyncio.CancelledError:
        # A signal: the collector released its leases on the way out. This is the normal end.
        task.uncancel()
    finally:
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
        with contextlib.suppress(Exception):
            await client.aclose()
