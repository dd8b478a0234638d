"""``python -m cyclecmda.data.pairs NAME ...``: write a domain pair."""

import sys

from cyclecmda.data.pairs.command import main

if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
