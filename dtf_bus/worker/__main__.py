"""``python -m dtf_bus.worker``."""

import sys

from dtf_bus.worker.main import main

sys.exit(main())
