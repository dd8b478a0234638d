import sys

from cyclecmda.cli import main

sys.exit(main())
