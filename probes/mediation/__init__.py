"""Causal mediation of an inferred attribute on the answer: effects over twins (``effects``),
the estimator (``estimator``) and the case studies (``cases``)."""

from __future__ import annotations

from probes.mediation.cases import (
    CASE_STUDIES,
    CaseStudy,
    CaseStudyResult,
    analyse_case_study,
    case_study,
    default_layers,
    direction_accuracy,
    markdown_table,
    run_case_study,
    subset_pairs,
)
from probes.mediation.effects import (
    EFFECTS,
    EffectEstimate,
    LayerMediation,
    estimate_effect,
    ratio_of_means,
    summarize,
)
from probes.mediation.estimator import (
    METRICS,
    MediatorSpec,
    Metric,
    Positions,
    PromptFn,
    answer_log_odds,
    default_prompts,
    mediate,
    mediate_many,
    mediator_bases,
    positive_answer_logprob,
    twin_pairs,
)
from probes.stats import bootstrap_indices, percentile_interval, sign_flip_p_value

__all__ = [
    "CASE_STUDIES",
    "EFFECTS",
    "METRICS",
    "CaseStudy",
    "CaseStudyResult",
    "EffectEstimate",
    "LayerMediation",
    "MediatorSpec",
    "Metric",
    "Positions",
    "PromptFn",
    "analyse_case_study",
    "answer_log_odds",
    "bootstrap_indices",
    "case_study",
    "default_layers",
    "default_prompts",
    "direction_accuracy",
    "estimate_effect",
    "markdown_table",
    "mediate",
    "mediate_many",
    "mediator_bases",
    "percentile_interval",
    "positive_answer_logprob",
    "ratio_of_means",
    "run_case_study",
    "sign_flip_p_value",
    "subset_pairs",
    "summarize",
    "twin_pairs",
]
