"""``python -m wsss_lib ...`` == ``wsss ...``."""

import sys

from .cli import main

sys.exit(main())
