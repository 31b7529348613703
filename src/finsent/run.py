"""`finsent run`: the main job. Runs the Prefect training flow and prints what came out of it."""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from finsent import layout
from finsent.config import load_params
from finsent.errors import FinsentError, GateFailed
from finsent.evaluate.gates import describe
from finsent.runtime import tracking_uri


def set_data_source(params_file: Path, data: str, data_format: str | None) -> str:
    """Point data.path (and data.format) at ``data`` in params.yaml, keeping its comments.

    Written to the file, like ``dvc exp run --set-param``, so dvc.lock records the source used.
    Returns the previous text so a failed run can restore it.
    """
    from ruamel.yaml import YAML

    source = Path(data).expanduser()
    if not source.is_file():
        raise FinsentError(f"data file not found: {data}" if not source.exists() else f"not a file: {data}")
    original = params_file.read_text(encoding="utf-8")
    yaml = YAML()
    document = yaml.load(original)
    root = params_file.parent.resolve()
    resolved = source.resolve()
    document["data"]["path"] = str(resolved.relative_to(root)) if resolved.is_relative_to(root) else str(resolved)
    document["data"]["format"] = data_format or "auto"
    with params_file.open("w", encoding="utf-8") as handle:
        yaml.dump(document, handle)
    return original


class _DropLockedDatabaseNoise(logging.Filter):
    """Prefect's ephemeral API can log a 'database is locked' traceback from a telemetry insert race at
    start-up; it is harmless (the run carries on), so it must not reach the user's console."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            text += str(record.exc_info[1])
        return "database is locked" not in text


def _quiet_prefect() -> None:
    for name in ("prefect", "prefect.server", "prefect._internal", "uvicorn", "uvicorn.error", "sqlalchemy",
                 "docket", "prefect.server.services"):
        logging.getLogger(name).addFilter(_DropLockedDatabaseNoise())


def run(root: Path, data: str | None = None, data_format: str | None = None) -> dict:
    params_file = root / "params.yaml"
    restore = set_data_source(params_file, data, data_format) if data else None
    try:
        params = load_params(params_file)
        print(f"finsent: training on {params.data.path} (params: {params_file})", flush=True)
        _quiet_prefect()
        sys.path.insert(0, str(root))
        from pipelines.training import training_flow

        state = training_flow(str(root), return_state=True)
        if state.is_failed():
            raise FinsentError(f"{state.message}; nothing registered, no alias moved")
    except FinsentError:
        if restore is not None:
            params_file.write_text(restore, encoding="utf-8")
        raise
    result = state.result()
    print_summary(root, params, result)
    if not result["gate"]["passed"]:
        raise GateFailed(f"gate failed ({describe(result['gate'])}): version {result['registration']['version']} "
                         f"registered without alias '{params.registry.champion_alias}'")
    return result


def print_summary(root: Path, params, result: dict) -> None:
    registration, metrics = result["registration"], result["metrics"]
    trained = any(s["ran"] for s in result["stages"] if s["stage"] == "train")
    if not any(s["ran"] for s in result["stages"]):
        print("finsent: nothing changed since the last run: no stage ran, nothing trained.")
    aliases = ", ".join(registration["aliases"]) or "no alias"
    state = "new version" if registration["new_version"] else "already registered"
    print(f"finsent: model '{registration['model_name']}' version {registration['version']} [{aliases}] ({state})")
    if registration["previous_champion"]:
        print(f"  replaced champion version {registration['previous_champion']} "
              f"(now alias '{params.registry.previous_alias}')")
    print(f"  test accuracy {metrics['accuracy']:.3f}, macro-F1 {metrics['macro_f1']:.3f} "
          f"on {metrics['test_rows']} held-out sentences; gate: {describe(result['gate'])}")
    print(f"  MLflow run {registration['run_id']} (experiment '{params.registry.experiment}')"
          f"{'' if trained else '; adapter from cache'}")
    print(f"  look:    mlflow ui --backend-store-uri {tracking_uri(root)}")
    print(f"  predict: finsent predict \"Operating profit rose 20 % to EUR 3.1 mn\"")
    print(f"  files:   {layout.EVAL_DIR}/ (metrics, confusion matrix), {layout.ADAPTER_DIR}/ (adapter bundle)")
