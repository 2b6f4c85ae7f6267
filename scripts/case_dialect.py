"""Case study 1 (Jin et al. 2024): do US vs UK spelling cues move the answer towards culturally
adapted content, and how much of that runs through the dialect subspace at the last token?

Metric: log-odds of the UK vs the US answer set (teams, currency, cities, ...) after each twin.

    python scripts/case_dialect.py --out runs/mediation/dialect
"""

from __future__ import annotations

import sys

from probes.cli.mediation import case_study_main

if __name__ == "__main__":
    sys.exit(case_study_main("dialect", __doc__.split("\n\n")[0]))
