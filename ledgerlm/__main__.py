import sys

from ledgerlm.cli import main

sys.exit(main())
