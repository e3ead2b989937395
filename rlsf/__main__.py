"""``python -m rlsf ...``: the console script (also what ``accelerate launch -m rlsf`` runs)."""

import sys

from rlsf.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
