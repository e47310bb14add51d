"""``python -m uda_core.cli`` (also what torchrun and scripts call)."""

import sys

from uda_core.cli.parser import main

if __name__ == "__main__":
    sys.exit(main())
