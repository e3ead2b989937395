"""``python -m rlsf.sandbox``: print which isolation holds here (``--self-test``, ``--benchmark``)."""

import sys

from .selftest import main

if __name__ == "__main__":
    sys.exit(main())
