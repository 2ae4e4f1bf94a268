"""`python -m ledgerlm.rehearsal DIR`: write the rehearsal's Hub mirror."""

import sys

from ledgerlm.rehearsal import main

sys.exit(main())
