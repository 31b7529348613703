"""Registry side on a real MLflow store (SQLite in a temp dir) with a tiny trained bundle."""

import json
import os
import subprocess
import sys
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import yaml
from mlflow import MlflowClient

from finsent import layout
from finsent.evaluate.metrics import evaluate
from finsent.promotion import promote
from finsent.registry import find_version, log_candidate, register
from finsent.train.fit import fit

from servers import free_port, wait_for
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
    verdict = {"passed": passed, "compared_with_champion": None,
               "checks": [{"gate": "min_macro_f1", "metric": "macro_f1", "observed": 0.5, "threshold": 0.1,
                           "kind": "absolute", "passed": passed}]}
    lineage = {"code": {"commit": "abc", "dirty": False}, "dvc_lock": "stages: {}\n"}
    run_id, uri = log_candidate(root, params, fingerprint, verdict, lineage)
    return register(uri, params.registry, fingerprint, verdict, run_id)


def test_registered_champion_loads_by_alias_and_predicts(project):
    root, params = project
    version = _candidate(root, params, "fp-1")
    event = promote(MlflowClient(), params.registry, version.version, expected_champion=None, reason="test")
    assert event["to_version"] == str(version.version) and event["from_version"] is None
    model = mlflow.pyfunc.load_model(f"models:/{params.registry.model_name}@champion")
    result = model.predict(pd.DataFrame({"text": ["profit rose to a record", "shares fell"]}))
    assert list(result.columns) == ["label", "prob_negative", "prob_neutral", "prob_positive"]
    assert set(result["label"]) <= {"negative", "neutral", "positive"}
    assert result.filter(like="prob_").sum(axis=1).round(6).eq(1.0).all()
    stored = mlflow.artifacts.download_artifacts(f"models:/{params.registry.model_name}/{version.version}")
    sizes = {p.name: p.stat().st_size for p in Path(stored).rglob("*") if p.is_file()}
    assert "model.safetensors" not in sizes, "the registered artifact must not carry the base weights"
    assert sum(sizes.values()) < 2_000_000


def test_fingerprint_lookup_finds_the_registered_version(project):
    root, params = project
    first = _candidate(root, params, "fp-1")
    client = MlflowClient()
    assert find_version(client, params.registry.model_name, "fp-1").version == first.version
    assert find_version(client, params.registry.model_name, "fp-3") is None
    tags = client.get_model_version(params.registry.model_name, first.version).tags
    assert tags["finsent.gate"] == "passed" and tags["gate.min_macro_f1"].startswith("pass: macro_f1 0.5000")


def test_champion_serves_over_rest_with_mlflow_models_serve(project, tmp_path):
    root, params = project
    version = _candidate(root, params, "fp-serve")
    promote(MlflowClient(), params.registry, version.version, expected_champion=None, reason="serve test")
    port = free_port()
    # mlflow runs `uvicorn` from PATH: make it this environment's, activated venv or not
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    process = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m",
                                f"models:/{params.registry.model_name}@champion", "--env-manager", "local",
                                "-h", "127.0.0.1", "-p", str(port)], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.PIPE, text=True)
    try:
        wait_for(f"http://127.0.0.1:{port}/ping", process, timeout=120)
        body = json.dumps({"dataframe_split": {"columns": ["text"],
                                               "data": [["profit rose to a record"], ["shares fell"]]}}).encode()
        request = urllib.request.Request(f"http://127.0.0.1:{port}/invocations", data=body,
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            predictions = json.loads(response.read())["predictions"]
    finally:
        process.terminate()
        process.wait(timeout=30)
    assert len(predictions) == 2
    assert set(predictions[0]) == {"label", "prob_negative", "prob_neutral", "prob_positive"}
    assert predictions[0]["label"] in {"negative", "neutral", "positive"}
