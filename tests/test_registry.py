"""Registry side on a real MLflow store (SQLite in a temp dir) with a tiny trained bundle."""

from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from finsent import layout
from finsent.config import GateParams
from finsent.evaluate.gates import check_gates
from finsent.evaluate.metrics import evaluate
from finsent.registry import find_version, log_candidate, promote, register
from finsent.train.fit import fit

from test_train_bundle import _params, tokenized  # noqa: F401  (module fixture reused)


@pytest.fixture()
def project(tmp_path, tiny_base, tokenized, monkeypatch):  # noqa: F811
    root = tmp_path / "project"
    params = _params(tiny_base, "lora", epochs=2)
    fit(tokenized, params, root / layout.ADAPTER_DIR, root / layout.TRAIN_REPORT)
    evaluate(root / layout.ADAPTER_DIR, tokenized.parent / "split" / "test.parquet", 16, root / layout.EVAL_DIR)
    (root / "params.yaml").write_text(yaml.safe_dump(params.as_dict()))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return root, params


def _candidate(root, params, fingerprint, passed=True):
    verdict = {"passed": passed, "checks": [{"gate": "min_macro_f1", "observed": 0.5, "threshold": 0.1,
                                             "passed": passed}]}
    lineage = {"code": {"commit": "abc", "dirty": False}, "dvc_lock": "stages: {}\n"}
    run_id, uri = log_candidate(root, params, fingerprint, verdict, lineage)
    return register(uri, params.registry, fingerprint, verdict, run_id)


def test_registered_champion_loads_by_alias_and_predicts(project):
    root, params = project
    version = _candidate(root, params, "fp-1")
    assert promote(MlflowClient(), params.registry, version.version) is None
    model = mlflow.pyfunc.load_model(f"models:/{params.registry.model_name}@champion")
    result = model.predict(pd.DataFrame({"text": ["profit rose to a record", "shares fell"]}))
    assert list(result.columns) == ["label", "prob_negative", "prob_neutral", "prob_positive"]
    assert set(result["label"]) <= {"negative", "neutral", "positive"}
    assert result.filter(like="prob_").sum(axis=1).round(6).eq(1.0).all()
    stored = mlflow.artifacts.download_artifacts(f"models:/{params.registry.model_name}/{version.version}")
    sizes = {p.name: p.stat().st_size for p in Path(stored).rglob("*") if p.is_file()}
    assert "model.safetensors" not in sizes, "the registered artifact must not carry the base weights"
    assert sum(sizes.values()) < 2_000_000


def test_promotion_keeps_previous_champion_and_fingerprint_lookup(project):
    root, params = project
    client = MlflowClient()
    first = _candidate(root, params, "fp-1")
    promote(client, params.registry, first.version)
    second = _candidate(root, params, "fp-2")
    assert promote(client, params.registry, second.version) == first.version
    name = params.registry.model_name
    assert client.get_model_version_by_alias(name, "champion").version == second.version
    assert client.get_model_version_by_alias(name, "previous-champion").version == first.version
    assert find_version(client, name, "fp-1").version == first.version
    assert find_version(client, name, "fp-3") is None


def test_gate_verdict_reports_observed_and_threshold():
    verdict = check_gates({"macro_f1": 0.42}, GateParams(min_macro_f1=0.5))
    assert verdict == {"passed": False, "checks": [{"gate": "min_macro_f1", "metric": "macro_f1", "observed": 0.42,
                                                    "threshold": 0.5, "passed": False}]}
