"""Prediction drift: the scored batch's predicted-label shares and confidence distribution against
the champion's predictions on its own test set (logged with its run), as population stability
indexes. No labels are needed, so it works on live, unlabelled text."""

from __future__ import annotations

import numpy as np
import pandas as pd

from finsent.config import MonitorParams
from finsent.data.drift import psi

CONFIDENCE_BINS = np.linspace(0.0, 1.0, 11)


def _shares(frame: pd.DataFrame, labels: list[str]) -> tuple[list[float], list[float]]:
    probabilities = frame[[f"prob_{name}" for name in labels]].to_numpy()
    predicted = probabilities.argmax(axis=1)
    label_shares = [float((predicted == i).mean()) for i in range(len(labels))]
    counts, _ = np.histogram(probabilities.max(axis=1), bins=CONFIDENCE_BINS)
    return label_shares, (counts / max(len(frame), 1)).tolist()


def prediction_drift(scored: pd.DataFrame, reference: pd.DataFrame, labels: list[str],
                     params: MonitorParams) -> dict:
    current_labels, current_confidence = _shares(scored, labels)
    reference_labels, reference_confidence = _shares(reference, labels)
    checks = [
        {"check": "label_psi", "observed": round(psi(reference_labels, current_labels), 4),
         "threshold": params.max_label_psi},
        {"check": "confidence_psi", "observed": round(psi(reference_confidence, current_confidence), 4),
         "threshold": params.max_confidence_psi},
    ]
    for check in checks:
        check["drifted"] = check["threshold"] is not None and check["observed"] > check["threshold"]
    return {"drifted": any(c["drifted"] for c in checks), "checks": checks, "reference_rows": len(reference),
            "rows": len(scored),
            "label_shares": {"reference": dict(zip(labels, reference_labels)),
                             "batch": dict(zip(labels, current_labels))}}
