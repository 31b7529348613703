"""The registered model as an MLflow pyfunc: adapter bundle in, labels + probabilities out.

The MLflow artifact holds only the adapter bundle (adapter + head + tokenizer + base identity);
the base weights are found from the identity and verified by sha256 when the model loads.
Loading needs the ``finsent`` package installed next to MLflow.
"""

from __future__ import annotations

from pathlib import Path

import mlflow.pyfunc
import pandas as pd

BUNDLE_ARTIFACT = "bundle"


class SentimentModel(mlflow.pyfunc.PythonModel):
    """``predict(DataFrame with a 'text' column)`` -> DataFrame: label, prob_<label> for each label."""

    def load_context(self, context) -> None:
        from finsent.bundle import load_bundle

        self._model, self._tokenizer, self._meta = load_bundle(Path(context.artifacts[BUNDLE_ARTIFACT]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        from finsent.bundle import predict_proba

        if isinstance(model_input, pd.DataFrame):
            texts = model_input["text"].astype(str).tolist()
        else:
            texts = [str(t) for t in model_input]
        labels = self._meta["labels"]
        probabilities = predict_proba(self._model, self._tokenizer, texts, self._meta["max_length"])
        result = pd.DataFrame({"label": [labels[i] for i in probabilities.argmax(axis=1)]})
        for i, name in enumerate(labels):
            result[f"prob_{name}"] = probabilities[:, i]
        return result


def signature(labels: list[str]):
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    outputs = [ColSpec("string", "label")] + [ColSpec("double", f"prob_{name}") for name in labels]
    return ModelSignature(inputs=Schema([ColSpec("string", "text")]), outputs=Schema(outputs))


def predict_texts(texts: list[str], model_uri: str | None = None) -> pd.DataFrame:
    """Score texts with a registered model (default: the champion of params' registry name)."""
    from finsent.config import load_params
    from finsent.errors import FinsentError
    from finsent.registry import champion_uri

    uri = model_uri or champion_uri(load_params().registry)
    try:
        model = mlflow.pyfunc.load_model(uri)
    except mlflow.exceptions.MlflowException as exc:
        raise FinsentError(f"cannot load {uri}: {str(exc).splitlines()[0]} (run `finsent run` first?)") from exc
    return model.predict(pd.DataFrame({"text": texts})).assign(text=texts)
