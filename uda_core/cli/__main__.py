"""``python -m uda_core.cli`` (also what torchrun and scripts call)."""

import sys

from uda_core.cli.parser import main

sys.exit(main())
