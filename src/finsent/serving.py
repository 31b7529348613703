"""The registered model as an MLflow pyfunc: adapter bundle in, labels + probabilities out.

The stored model is data only: the adapter bundle (adapter + head + tokenizer + base identity) and an MLmodel
that names this module as the pyfunc loader (``loader_module: finsent.serving``), so loading runs the
installed ``finsent`` package, never code stored with the model, and unpickles nothing. The base weights
are found from the identity and verified by sha256 when the model loads. finsent's own loads first check
every stored file against the seal made at registration (``finsent.model_files``).
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import mlflow.pyfunc
import pandas as pd

from finsent.errors import FinsentError


class SentimentModel:
    """``predict(DataFrame with a 'text' column)`` -> DataFrame: label, prob_<label> for each label."""

    def __init__(self, bundle_dir: Path) -> None:
        from finsent.onnx_model import load_scorer

        self._scorer = load_scorer(Path(bundle_dir))  # ONNX Runtime when the version was registered with it

    @property
    def backend(self) -> str:
        return self._scorer.backend

    def predict(self, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        if isinstance(model_input, pd.DataFrame):
            texts = model_input["text"].astype(str).tolist()
        else:
            texts = [str(t) for t in model_input]
        labels = self._scorer.labels
        probabilities = self._scorer.predict_proba(texts)
        result = pd.DataFrame({"label": [labels[i] for i in probabilities.argmax(axis=1)]})
        for i, name in enumerate(labels):
            result[f"prob_{name}"] = probabilities[:, i]
        return result


def _load_pyfunc(data_path: str) -> SentimentModel:
    """MLflow's entry for ``loader_module: finsent.serving``: ``data_path`` is the stored bundle folder."""
    return SentimentModel(Path(data_path))


def signature(labels: list[str]):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    outputs = [ColSpec("string", "label")] + [ColSpec("double", f"prob_{name}") for name in labels]
    return ModelSignature(inputs=Schema([ColSpec("string", "text")]), outputs=Schema(outputs))


def load_model(model_uri: str | None = None):
    """A registered model as an MLflow pyfunc model, its files checked against their seal before MLflow reads
    any of them (default: the champion of params' registry name). Prefer it to ``mlflow.pyfunc.load_model``,
    which loads whatever the artifact store holds."""
    from finsent.config import load_params
    from finsent.model_files import champion_uri, fetch_verified

    uri = model_uri or champion_uri(load_params().registry)
    with tempfile.TemporaryDirectory(prefix="finsent-model-") as scratch:
        return mlflow.pyfunc.load_model(str(fetch_verified(uri, Path(scratch)).path))


def predict_texts(texts: list[str], model_uri: str | None = None) -> pd.DataFrame:
    """Score texts with a registered model (see ``load_model``)."""
    blank = [str(i) for i, text in enumerate(texts, 1) if not text.strip()]
    if blank:
        which = f"text {blank[0]} is" if len(blank) == 1 else f"texts {', '.join(blank)} are"
        raise FinsentError(f"{which} blank (of {len(texts)}): give each sentence as one non-empty argument; "
                           f"nothing was scored")
    return load_model(model_uri).predict(pd.DataFrame({"text": texts})).assign(text=texts)
