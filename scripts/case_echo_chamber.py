"""Case study 3 (Jin et al. 2024, echo chamber): a user states a false rather than a true belief
before asking a factual question. Does the answer shift towards the user's (false) answer, is the
stated belief represented as a user attribute (held-out accuracy of the true/false direction,
column "dir. acc."), and how much of the sycophantic shift runs through that direction?

Metric: log-odds of the correct vs the user's false answer (true belief = x, false belief = x').

    python scripts/case_echo_chamber.py --out runs/mediation/echo_chamber
"""

from __future__ import annotations

import sys

from probes.cli.mediation import case_study_main

if __name__ == "__main__":
    sys.exit(case_study_main("echo_chamber", __doc__.split("\n\n")[0]))
