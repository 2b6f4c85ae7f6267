"""Linear probes: the batched logistic fitter, layer-wise fits with controls, and transfer."""

from __future__ import annotations

from probes.probing.layerwise import (
    WORKING_BYTES,
    LayerwiseResult,
    Splits,
    bootstrap_interval,
    bow_baseline,
    classification_metrics,
    encode_labels,
    fit_layerwise,
    layer_chunks,
    make_splits,
    out_of_fold,
)
from probes.probing.linear import (
    FORMAT,
    FORMAT_VERSION,
    BatchedFit,
    FittedProbe,
    LinearProbe,
    decision_batched,
    fit_logistic_batched,
    predict_proba_batched,
    sklearn_reference_fit,
)
from probes.probing.transfer import TransferResult, transfer, transfer_matrix

__all__ = [
    "FORMAT",
    "FORMAT_VERSION",
    "WORKING_BYTES",
    "BatchedFit",
    "FittedProbe",
    "LayerwiseResult",
    "LinearProbe",
    "Splits",
    "TransferResult",
    "bootstrap_interval",
    "bow_baseline",
    "classification_metrics",
    "decision_batched",
    "encode_labels",
    "fit_layerwise",
    "fit_logistic_batched",
    "layer_chunks",
    "make_splits",
    "out_of_fold",
    "predict_proba_batched",
    "sklearn_reference_fit",
    "transfer",
    "transfer_matrix",
]
