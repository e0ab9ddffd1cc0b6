"""``wsclient collect CONFIG --redis URL``: one replica of a highly available collector (``wsclient.collect``).

The collector and redis-py are imported only when the command runs: the
other commands, and ``import wsclient``, never load them.
"""

from __future__ import annotations

import argparse
import logging

from .options import Subcommands, UsageError, add_output_options
from .status_line import StatusLine

__all__ = ["add_command"]

_HELP = "collect feeds into Redis Streams, sharing them with other replicas through leases (needs [redis])"
_EXIT_CODES = """\
exit codes:
  0  stopped by SIGTERM or Ctrl-C, leases given back
  2  usage or configuration error
  3  the --redis URL is not one redis-py accepts
"""


def add_command(commands: Subcommands) -> None:
    """Add ``collect`` and its options to the ``wsclient`` command."""
    parser = commands.add_parser(
        "collect",
        help=_HELP,
        description=_HELP,
        epilog=_EXIT_CODES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.set_defaults(run=_run, log_level=logging.WARNING, usage_error=parser.error)
    parser.add_argument("config", help="TOML file listing the feeds ([[feed]] tables)")
    parser.add_argument("--redis", required=True, metavar="URL", help="redis://[:password@]host:port/db")
    parser.add_argument("--replica", metavar="ID", help="this replica's unique id (default HOST:PID:RANDOM)")
    add_output_options(parser)


async def _run(args: argparse.Namespace, status: StatusLine | None) -> int:
    try:
        from ..collect.command import serve
    except ImportError as exc:
        raise UsageError(f"collect needs redis-py: pip install 'wsclient-resilient[redis]' ({exc})") from None
    return await serve(args)
