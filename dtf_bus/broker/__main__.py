"""``python -m dtf_bus.broker``."""

import sys

from dtf_bus.broker.app import main

sys.exit(main())
