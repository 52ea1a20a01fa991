"""``python -m ensemble``: dispatch to :mod:`ensemble.cli`."""

import sys

from ensemble.cli import main

if __name__ == "__main__":
    sys.exit(main())
