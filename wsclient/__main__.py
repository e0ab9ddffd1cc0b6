"""``python -m wsclient``: the ``wsclient`` command."""

from .cli import main

raise SystemExit(main())
