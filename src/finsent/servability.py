"""Servability: before an alias moves, the registered version must work as its consumers will load it.

The version is loaded from the registry in a fresh process (``finsent.serving.load_model``: every stored file
checked against its seal, then ``mlflow.pyfunc.load_model`` on that copy), scores the test rows, and must
reproduce the evaluation's predictions: the same label for every row and each probability within the
tolerance. A version that fails is registered but gets no alias, and the reason is the promotion decision.

``python -m finsent.servability`` is that fresh process: it imports its libraries and opens MLflow's stores
(about 2 s on 2 cores), then reads what to check from its stdin (a JSON list: MODEL_URI, TEST_PARQUET,
OUT_PARQUET). A run starts it before the version is registered (``start_early``), so that start overlaps the
registration; nothing of the model is loaded before the version exists.
"""

from __future__ import annotations

import atexit
import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

TIMEOUT_SECONDS = 900

_early: tuple[subprocess.Popen, dict, str] | None = None  # start_early's process, environment and folder


@dataclass(frozen=True)
class Servability:
    passed: bool
    reason: str  # what was checked and what was found: the report and the history show it


def _compare(served: pd.DataFrame, evaluated: pd.DataFrame, tolerance: float) -> Servability:
    merged = evaluated.merge(served, on="id", suffixes=("", "_served"))
    if len(merged) != len(evaluated):
        return Servability(False, f"scored {len(merged)} of the {len(evaluated)} test rows")
    differing = int((merged["predicted"] != merged["label_served"]).sum())
    columns = [c for c in evaluated.columns if c.startswith("prob_")]
    drift = float(np.max(np.abs(merged[columns].to_numpy() - merged[[f"{c}_served" for c in columns]].to_numpy())))
    if differing or drift > tolerance:
        return Servability(False, f"the registered model does not reproduce the evaluation: {differing} of "
                                  f"{len(merged)} labels differ, largest probability difference {drift:.2e} "
                                  f"(tolerance {tolerance:.0e})")
    return Servability(True, f"loaded from the registry in a fresh process: {len(merged)} test rows, same labels, "
                             f"probabilities within {drift:.1e}")


def _start() -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "finsent.servability"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.kill()
        process.communicate()


def start_early() -> None:
    """Start the fresh process for the next ``check`` now, so its start overlaps what this process does first
    (registering the version)."""
    global _early
    if _early is None:
        _early = (_start(), dict(os.environ), os.getcwd())
        atexit.register(_stop, _early[0])  # should the run end without a version to check


def _take_early() -> subprocess.Popen | None:
    """start_early's process, if it runs where a process started now would (the same environment and folder:
    not one a failed flow left behind for another project)."""
    global _early
    early, _early = _early, None
    if early is None:
        return None
    process, environment, folder = early
    if environment == os.environ and folder == os.getcwd():
        return process
    _stop(process)
    return None


def check(model_uri: str, test_split: Path, evaluated_predictions: Path, tolerance: float) -> Servability:
    """Load ``model_uri`` in a fresh process, score ``test_split`` and compare with the evaluation's predictions."""
    process = _take_early() or _start()
    with tempfile.TemporaryDirectory(prefix="finsent-servability-") as scratch:
        out = Path(scratch) / "served.parquet"
        try:
            _, stderr = process.communicate(json.dumps([model_uri, str(test_split), str(out)]) + "\n",
                                            timeout=TIMEOUT_SECONDS)
        except subprocess.TimeoutExpired:
            _stop(process)
            return Servability(False, f"loading and scoring {model_uri} took over {TIMEOUT_SECONDS} s")
        if process.returncode != 0:
            why = next((line for line in reversed(stderr.splitlines()) if line.strip()), "no message")
            return Servability(False, f"{model_uri} does not load in a fresh process: {why}")
        return _compare(pd.read_parquet(out), pd.read_parquet(evaluated_predictions), tolerance)


def _open_ahead() -> None:
    """What every load needs, before the version is known: the libraries and MLflow's stores."""
    import contextlib

    from finsent.tracking import open_stores

    with contextlib.suppress(ImportError):
        import onnxruntime  # noqa: F401  the default backend's runtime and tokenizer
        import tokenizers  # noqa: F401
    open_stores()


def main() -> int:
    """The fresh process: load as a consumer does, score, write id + label + probabilities."""
    from finsent.errors import FinsentError
    from finsent.runtime import collector_paused, quiet_libraries

    quiet_libraries()
    try:
        with collector_paused():  # imports and the model: they live until exit
            from finsent.serving import load_model

            _open_ahead()
            line = sys.stdin.readline()
            if not line.strip():  # the run ended without a version to check
                return 0
            model_uri, test_split, out = json.loads(line)
            model = load_model(model_uri)
        test = pd.read_parquet(test_split)
        scored = model.predict(test[["text"]])
    except FinsentError as exc:
        print(exc, file=sys.stderr)
        return 1
    except Exception as exc:  # any failure to load or score is the check's finding, in one line
        print(f"{type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}", file=sys.stderr)
        return 1
    scored.insert(0, "id", test["id"].to_numpy())
    scored.to_parquet(out, index=False)
    return 0


if __name__ == "__main__":
    from finsent.runtime import exit_process

    exit_process(main())
