"""``python -m refnet.cli ...``: the ``refnet`` command."""

import sys

from refnet.cli import main

if __name__ == "__main__":  # not when a package walk imports it
    sys.exit(main())
