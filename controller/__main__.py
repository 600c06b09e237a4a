"""`python -m controller` is the same as the `trm-sre` console script."""

import sys

from controller.tools.cli import main

sys.exit(main())
