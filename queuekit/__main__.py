"""``python -m queuekit``: the same command line as the ``queuekit`` script."""

from .cli import main

raise SystemExit(main())
