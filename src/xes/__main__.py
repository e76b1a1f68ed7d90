"""``python -m xes``: the same as the ``xes`` command."""

import sys

from xes.cli import main

sys.exit(main())
