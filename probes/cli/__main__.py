"""`python -m probes.cli`."""

import sys

from probes.cli.app import main

sys.exit(main())
