"""``python -m rlsf.cli ...``: the console script (same as ``python -m rlsf``)."""

import sys

from rlsf.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
