"""``python -m whyserve``: the ``whyserve`` command line."""

import sys

from whyserve.cli import main

sys.exit(main())
