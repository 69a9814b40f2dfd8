"""``python -m dtf_bus.worker``."""

import sys

from dtf_bus.worker.worker import main

sys.exit(main())
