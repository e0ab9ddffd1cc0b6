"""``python -m wsclient.collect CONFIG --redis URL``."""

from __future__ import annotations

import sys

from .command import build_parser, run


def main() -> int:
    """Parse the command line and run one replica."""
    return run(build_parser().parse_args())


if __name__ == "__main__":
    sys.exit(main())
