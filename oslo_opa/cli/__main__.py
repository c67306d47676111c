"""``python -m oslo_opa.cli``."""

import sys

from oslo_opa.cli import main

sys.exit(main())
