"""``python -m dtf_bus.cli``."""

import sys

from dtf_bus.cli.main import main

sys.exit(main())
