"""``python -m genni_ext.cli``: the ``genni`` command."""

import sys

from .entry import main

sys.exit(main())
