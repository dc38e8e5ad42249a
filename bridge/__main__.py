"""``python -m bridge ...`` is the ``aiedit`` console script (useful before the package is installed)."""

import sys

from bridge.commands.cli import main

sys.exit(main())
