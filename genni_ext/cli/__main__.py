"""``python -m genni_ext.cli``: the ``genni`` command."""

import sys

from genni_ext.cli.entry import main

sys.exit(main())
