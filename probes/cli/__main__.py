"""`python -m probes.cli`."""

import sys

from probes.cli.main import main

sys.exit(main())
