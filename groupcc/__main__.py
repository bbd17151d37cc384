"""``python -m groupcc``: the same command line as ``groupcc``."""

import sys

from groupcc.cli import main

sys.exit(main())
