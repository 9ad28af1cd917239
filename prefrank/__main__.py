"""``python -m prefrank`` runs the command-line interface."""

import sys

from prefrank.cli import main

if __name__ == "__main__":
    sys.exit(main())
