"""``python -m xmrt.cli``: the ``xmrt`` command line."""

import sys

from xmrt.cli import main

sys.exit(main())
