"""Run the prefrank gRPC server: ``python -m prefrank.server`` (same as ``prefrank serve``)."""

import sys

from prefrank.cli import main

if __name__ == "__main__":
    sys.exit(main(["serve", *sys.argv[1:]]))
