"""``python -m lens_widget``: the command line (:mod:`lens_widget.cli`)."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
