"""``python -m signaling.swarm``: ``callrt swarm`` without the ``callrt`` command (and how workers start)."""

import sys

from signaling.swarm.cli import main

sys.exit(main())
