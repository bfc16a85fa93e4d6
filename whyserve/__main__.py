"""``python -m whyserve``: the ``whyserve`` command line."""

import sys

from whyserve.entry import main

sys.exit(main())
