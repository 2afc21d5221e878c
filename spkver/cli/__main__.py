"""`python -m spkver.cli ...`: the same as the `spkver` command."""

import sys

from spkver.cli import main

sys.exit(main())
