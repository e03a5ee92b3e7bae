"""``python -m asd_utils.submission write|check …`` (see :mod:`asd_utils.submission`)."""

import sys

from asd_utils.submission import main

sys.exit(main())
