"""Registry side on a real MLflow store (SQLite in a temp dir) with a tiny trained bundle."""

import dataclasses
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
from finsent.config import EvalParams, Params
from finsent.evaluate.metrics import evaluate
from finsent.promotion import promote
from finsent.registry import find_version, log_candidate, register
from finsent.tracking import open_run
from finsent.train.fit import fit

from servers import free_port, wait_for
from test_train_bundle import _params, tokenized  # noqa: F401  (module fixture reused)


@pytest.fixture()
def project(tmp_path, tiny_base, tokenized, monkeypatch):  # noqa: F811
    root = tmp_path / "project"
    params = _params(tiny_base, "lora", epochs=2)
    fit(tokenized, params, root / layout.ADAPTER_DIR, root / layout.TRAIN_REPORT)
    evaluate(root / layout.ADAPTER_DIR, tokenized.parent / "split" / "test.parquet", EvalParams(batch_size=16),
             root / layout.EVAL_DIR)
    (root / "params.yaml").write_text(yaml.safe_dump(params.as_dict()))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    mlflow.set_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    return root, params


def _candidate(root, params, fingerprint, passed=True):
    verdict = {"passed": passed, "compared_with_champion": None,
               "checks": [{"gate": "min_macro_f1", "metric": "macro_f1", "observed": 0.5, "threshold": 0.1,
                           "kind": "absolute", "passed": passed}]}
    lineage = {"code": {"commit": "abc", "dirty": False}, "dvc_lock": "stages: {}\n"}
    run_id, uri = log_candidate(root, params, fingerprint, verdict, lineage, open_run(root, params).run_id)
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
    from finsent.model_files import fetch_into

    served = fetch_into(f"models:/{params.registry.model_name}@champion", tmp_path / "served")  # checked copy
    assert served.version == str(version.version) and (served.path / "MLmodel").is_file()
    port = free_port()
    # mlflow runs `uvicorn` from PATH: make it this environment's, activated venv or not
    env = {**os.environ, "MLFLOW_TRACKING_URI": mlflow.get_tracking_uri(),
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    process = subprocess.Popen([str(Path(sys.executable).parent / "mlflow"), "models", "serve", "-m",
                                str(served.path), "--env-manager", "local",
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


def _stored_files(params, version) -> Path:
    """The artifact-store folder that holds a registered version's files (what an attacker would edit)."""
    client = MlflowClient()
    model_id = client.get_model_version(params.registry.model_name, str(version)).source.removeprefix("models:/")
    location = client.get_logged_model(model_id).artifact_location
    return Path(location.removeprefix("file://"))


def test_registered_model_holds_no_code_and_is_sealed(project):
    import hashlib

    from finsent.model_files import MANIFEST_TAG

    root, params = project
    version = _candidate(root, params, "fp-seal")
    stored = _stored_files(params, version.version)
    mlmodel = yaml.safe_load((stored / "MLmodel").read_text())["flavors"]["python_function"]
    assert mlmodel["loader_module"] == "finsent.serving" and mlmodel.get("code") is None
    assert not [p for p in stored.rglob("*") if p.suffix in (".py", ".pkl", ".pickle", ".bin", ".pt")]
    sealed = json.loads(MlflowClient().get_model_version(params.registry.model_name, version.version)
                        .tags[MANIFEST_TAG])
    files = {p.relative_to(stored).as_posix(): p for p in stored.rglob("*") if p.is_file()}
    assert set(sealed) == set(files) and "data/adapter/adapter_model.safetensors" in sealed
    assert all(hashlib.sha256(files[k].read_bytes()).hexdigest() == v for k, v in sealed.items())


def _zero_classifier(path: Path) -> None:
    from safetensors.torch import load_file, save_file

    weights = load_file(str(path))
    assert any("classifier" in k for k in weights)
    save_file({k: v * 0 if "classifier" in k else v for k, v in weights.items()}, str(path))


def _shadow_finsent_package(stored: Path, marker: Path) -> None:
    """What an attacker with write access to the artifact store would do: ship a 'finsent' package that
    MLflow puts first on sys.path (MLmodel ``code:``), so that loading runs it."""
    package = stored / "code" / "finsent"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(f"open({str(marker)!r}, 'w').write('ran')\n")
    text = (stored / "MLmodel").read_text().replace("code: null", "code: code")
    (stored / "MLmodel").write_text(text)


@pytest.mark.parametrize("tamper, named", [
    ("code", "code/finsent/__init__.py added"),
    ("mlmodel", "MLmodel changed"),
    ("adapter", "data/adapter/adapter_model.safetensors changed"),
    ("removed", "data/adapter/finsent_model.json missing"),
])
def test_a_tampered_model_is_refused_before_anything_loads(project, tmp_path, tamper, named):
    from finsent.errors import FinsentError
    from finsent.registry import champion_bundle
    from finsent.serving import predict_texts

    root, params = project
    version = _candidate(root, params, f"fp-{tamper}")
    uri = f"models:/{params.registry.model_name}/{version.version}"
    assert len(predict_texts(["profit rose"], uri)) == 1  # sealed and intact: loads
    stored, marker = _stored_files(params, version.version), tmp_path / "executed"
    if tamper == "code":
        _shadow_finsent_package(stored, marker)
    elif tamper == "mlmodel":
        (stored / "MLmodel").write_text((stored / "MLmodel").read_text().replace("finsent.serving", "os"))
    elif tamper == "adapter":
        _zero_classifier(stored / "data" / "adapter" / "adapter_model.safetensors")
    else:
        (stored / "data" / "adapter" / "finsent_model.json").unlink()
    for load in (lambda: predict_texts(["profit rose"], uri),
                 lambda: champion_bundle(params.registry, str(version.version), tmp_path / "scratch")):
        with pytest.raises(FinsentError) as refused:
            load()
        message = str(refused.value)
        assert "\n" not in message and named in message and f"v{version.version}" in message
    assert not marker.exists(), "nothing stored with the model may run"


def test_a_version_without_a_seal_is_refused(project):
    from finsent.errors import FinsentError
    from finsent.model_files import MANIFEST_TAG
    from finsent.serving import predict_texts

    root, params = project
    version = _candidate(root, params, "fp-unsealed")
    MlflowClient().delete_model_version_tag(params.registry.model_name, version.version, MANIFEST_TAG)
    with pytest.raises(FinsentError, match="no file seal"):
        predict_texts(["profit rose"], f"models:/{params.registry.model_name}/{version.version}")


def test_only_registered_models_load_and_blank_texts_are_refused(project):
    from finsent.errors import FinsentError
    from finsent.serving import predict_texts

    root, params = project
    with pytest.raises(FinsentError, match="models:/NAME/VERSION or models:/NAME@ALIAS"):
        predict_texts(["profit rose"], "runs:/abc/model")
    with pytest.raises(FinsentError, match="blank"):
        predict_texts(["profit rose", "  "], "models:/whatever/1")


def test_fetch_refuses_a_folder_in_use_and_leaves_nothing_behind(project, tmp_path):
    from finsent.errors import FinsentError, VerificationFailed
    from finsent.model_files import fetch_into

    root, params = project
    version = _candidate(root, params, "fp-fetch")
    uri = f"models:/{params.registry.model_name}/{version.version}"
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "keep.txt").write_text("mine")
    with pytest.raises(FinsentError, match="not an empty folder"):
        fetch_into(uri, tmp_path / "used")
    assert [p.name for p in (tmp_path / "used").iterdir()] == ["keep.txt"]
    _zero_classifier(_stored_files(params, version.version) / "data" / "adapter" / "adapter_model.safetensors")
    with pytest.raises(VerificationFailed, match="adapter_model.safetensors changed"):
        fetch_into(uri, tmp_path / "out" / "model")
    assert not (tmp_path / "out" / "model").exists() and not list((tmp_path / "out").iterdir())


def test_evaluation_times_the_candidate_against_its_own_base(project):
    from finsent.config import GateParams
    from finsent.evaluate.gates import check_gates

    root, params = project
    metrics = json.loads((root / layout.EVAL_DIR / "metrics.json").read_text())
    assert 0 < metrics["latency_ratio_to_base"] < float("inf") and metrics["latency_base_batch_ms"] > 0
    checks = {c["gate"]: c for c in check_gates(metrics, GateParams(), params.labels)["checks"]}
    assert checks["max_latency_ratio"]["metric"] == "latency_ratio_to_base"
    assert "max_latency_p95_ms" not in checks, "wall-time latency is off by default: it depends on the machine's load"


def test_doctor_checks_a_write_and_claims_no_auth_for_a_local_store(tmp_path, monkeypatch):
    from finsent.doctor import check_mlflow

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'doctor.db'}")
    check = check_mlflow()
    assert check.ok, check.line()
    assert "take writes" in check.detail and "a local store" in check.detail and "auth" not in check.detail
    assert MlflowClient(f"sqlite:///{tmp_path / 'doctor.db'}").search_registered_models() == [], \
        "the write probe leaves nothing behind"


def test_a_verified_download_ignores_what_else_the_folder_holds(project, tmp_path):
    """The monitor downloads the champion's test predictions and its model into one scratch folder."""
    from finsent.registry import champion_bundle

    root, params = project
    version = _candidate(root, params, "fp-shared-folder")
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "test_predictions.parquet").write_bytes(b"another artifact")
    bundle = champion_bundle(params.registry, str(version.version), tmp_path / "shared")
    assert (bundle / "finsent_model.json").is_file()
    assert (tmp_path / "shared" / "test_predictions.parquet").read_bytes() == b"another artifact"


def test_a_version_damaged_after_registration_is_not_servable_and_gets_no_alias(project, tokenized):  # noqa: F811
    """Servability before any alias moves: the intact version, loaded from the registry in a fresh process,
    reproduces the evaluation; one flipped byte in its stored weights fails the check, the promotion is refused
    with the reason (decision and alias history), and no alias moves."""
    import shutil

    from finsent import servability
    from finsent.promotion import history
    from finsent.release import REFUSED, SERVABILITY_TAG, check_servable, promote_in_turn

    root, params = project
    (root / layout.TEST_SPLIT).parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(tokenized.parent / "split" / "test.parquet", root / layout.TEST_SPLIT)
    version = _candidate(root, params, "fp-servable")
    registration = {"model_name": params.registry.model_name, "version": str(version.version),
                    "run_id": version.run_id, "new_version": True}
    served = check_servable(root, params, registration)
    assert served.passed, served.reason
    client = MlflowClient()
    assert client.get_model_version(params.registry.model_name, version.version).tags[SERVABILITY_TAG] \
        .startswith("passed: loaded from the registry in a fresh process")

    weights = _stored_files(params, version.version) / "data" / "adapter" / "adapter_model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-5] ^= 0xFF  # one byte of the last tensor
    weights.write_bytes(bytes(data))
    verdict = {"passed": True, "compared_with_champion": None, "checks": []}
    state = {"champion": None, "existing_version": None}
    servability.start_early()  # as a run does before it registers: this check takes that process
    early = servability._early[0]
    promotion = promote_in_turn(root, params, registration, verdict, state, {"champion_version": None})
    assert servability._early is None and early.returncode == 1, "the early process ran the check (and failed it)"
    assert promotion.outcome == REFUSED, promotion
    assert "servability check failed" in promotion.decision and "adapter_model.safetensors changed" \
        in promotion.decision, promotion.decision
    assert client.get_model_version(params.registry.model_name, version.version).aliases == []
    refusal = history(client, params.registry.model_name)[-1]
    assert refusal["moved"] is False and "servability check failed" in refusal["reason"]


def test_the_servability_check_is_known_before_registration_and_skips_the_champions_own_version():
    """A run starts the check's fresh process before it registers, when it will need one."""
    from finsent.release import servability_checked

    params = Params()
    passed, failed = {"passed": True}, {"passed": False}
    assert servability_checked(params, passed, {"champion": "3", "existing_version": None})  # a new version
    assert servability_checked(params, passed, {"champion": "3", "existing_version": "2"})  # an earlier one, again
    assert not servability_checked(params, passed, {"champion": "3", "existing_version": "3"})  # unchanged re-run
    assert not servability_checked(params, failed, {"champion": None, "existing_version": None})
    off = dataclasses.replace(params, gate=dataclasses.replace(params.gate, servability_check=False))
    assert not servability_checked(off, passed, {"champion": None, "existing_version": None})


def test_an_early_servability_process_left_from_another_environment_is_not_used(monkeypatch):
    """A flow that failed after starting the process leaves it behind; a check in another project's environment
    (the next flow of a long-lived process) starts its own."""
    from finsent import servability

    servability.start_early()
    stale = servability._early[0]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:////nonexistent/another-project.db")
    assert servability._take_early() is None
    assert stale.returncode is not None and servability._early is None  # stopped, not left running
