"""Case study 2 (Jin et al. 2024): does writing the same factual request in non-native English
lower the log-probability of the correct answer, and does that run through the proficiency
subspace at the last token?

Metric: log p(correct answer set) after each twin (native = x, non-native = x').

    python scripts/case_proficiency.py --out runs/mediation/proficiency
"""

from __future__ import annotations

import sys

from probes.cli.mediation import case_study_main

if __name__ == "__main__":
    sys.exit(case_study_main("proficiency", __doc__.split("\n\n")[0]))
