"""Embedded defaults and quiet logs: where local state lives when no server is configured.

All local state of a project sits in ``<project>/.finsent/`` (git-ignored):
  mlflow.db        MLflow tracking + model registry (SQLite)
  mlartifacts/     MLflow artifacts
  prefect/         PREFECT_HOME (the ephemeral Prefect API's database)
  dvc-remote/      the default DVC remote (configured in .dvc/config)
The standard variables (MLFLOW_TRACKING_URI, PREFECT_API_URL, PREFECT_HOME) override them.
Call ``apply_defaults`` before importing prefect or mlflow: both read settings at import.
"""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import sys
import urllib.parse
import warnings
from pathlib import Path
from typing import NoReturn

STATE_DIR = ".finsent"


def project_root(start: Path | None = None) -> Path:
    """The folder holding dvc.yaml and params.yaml, searched upwards from ``start`` (cwd)."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / "dvc.yaml").is_file() and (folder / "params.yaml").is_file():
            return folder
    return here


def state_dir(root: Path) -> Path:
    return root / STATE_DIR


def tracking_uri(root: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{state_dir(root) / 'mlflow.db'}"


def redact(url: str) -> str:
    """``url`` without a password in its user-info part (http://user:secret@host -> http://user:***@host)."""
    parts = urllib.parse.urlsplit(url)
    if parts.password is None:
        return url
    netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc))


def artifact_root(root: Path) -> str:
    return (state_dir(root) / "mlartifacts").as_uri()


def project_experiment_id(client, name: str, root: Path) -> str:
    """The MLflow experiment ``name`` (``client``: an MlflowClient), created with its artifacts under this
    project's embedded artifact root when it does not exist yet."""
    experiment = client.get_experiment_by_name(name)
    if experiment is not None:
        return experiment.experiment_id
    return client.create_experiment(name, artifact_location=f"{artifact_root(root)}/{name}")


RUN_NAME_ENV = "FINSENT_RUN_NAME"  # the flow run's name, for what its stage processes record (GX's run name)


def apply_defaults(root: Path) -> None:
    """Point MLflow and Prefect at the project's embedded state unless the user configured them."""
    state = state_dir(root)
    state.mkdir(exist_ok=True)
    os.environ.setdefault("MLFLOW_TRACKING_URI", tracking_uri(root))
    os.environ.setdefault("PREFECT_HOME", str(state / "prefect"))
    # Telemetry off: no network calls from a pipeline that must run offline.
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("GX_ANALYTICS_ENABLED", "false")
    os.environ.setdefault("DVC_NO_ANALYTICS", "1")
    os.environ.setdefault("MLFLOW_ENABLE_TELEMETRY", "false")
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    # The flows' lines (log_prints) and Prefect's own run records reach the run's Logs tab at INFO; the console
    # shows warnings only, and the flows echo their own lines to stdout (echo_run_lines)
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "INFO")
    os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "WARNING")
    if not os.environ.get("PREFECT_API_URL"):
        # Prefect waits 20 s for its ephemeral API to come up; a busy 2-core machine (CI, a training run beside)
        # can take longer, and the run then dies before doing anything. Only where the ephemeral API is used.
        os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
    os.environ.setdefault("MLFLOW_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    # MLflow's default (7 retries, doubling waits) keeps a command silent for minutes on an unreachable server;
    # the flow's tasks retry on their own (NETWORK_RETRIES)
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "3")


@contextlib.contextmanager
def collector_paused():
    """The garbage collector off while a command imports its libraries and loads its model, then the objects made
    so far frozen (kept out of its later passes). Importing torch, transformers, MLflow or Prefect makes hundreds
    of thousands of objects that live until exit; with the collector on, every few thousand new ones it walks
    those already there again: 0.4 s of a 3.8 s servability check, 1.1 s of a 2-epoch `finsent run` on 2 cores."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if enabled:
            gc.enable()


def exit_process(code: int) -> NoReturn:
    """A normal exit (threads joined, exit handlers run, streams flushed) that skips the garbage collector's
    final passes over every object torch, transformers, MLflow and GX created at import: 1.5 s per process on
    2 cores, for memory the OS takes back anyway. For a command's process, after its work is done."""
    gc.freeze()
    sys.exit(code)


def quiet_libraries() -> None:
    """Keep the console readable: our own progress lines and bars, library warnings only when real."""
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", category=UserWarning, module=r"(mlflow|pydantic|great_expectations|torch)\b.*")
    # The model is logged with an explicit signature; an input example would only re-run predict at log time.
    warnings.filterwarnings("ignore", message=r".*An input example was not provided")
    for name in ("mlflow", "alembic", "great_expectations", "dvc", "urllib3", "httpx", "git", "filelock"):
        logging.getLogger(name).setLevel(logging.ERROR)
    # Read when transformers / huggingface_hub are imported: a command that never needs them (an unchanged
    # re-run) does not pay a second for importing transformers just to quiet it.
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    transformers = sys.modules.get("transformers")
    if transformers is not None:  # imported already: it has read its settings
        transformers.logging.set_verbosity_error()
        transformers.logging.disable_progress_bar()


class _RunLinesToStdout(logging.Handler):
    """The flows run with ``log_prints``: their progress lines become INFO records of the Prefect run (the UI's
    Logs tab) instead of stdout. The console still shows them as plain lines on stdout: the INFO records of the
    run loggers that finsent's code wrote (not Prefect's own 'Beginning flow run' records)."""

    def __init__(self):
        super().__init__(logging.INFO)

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno == logging.INFO and f"{os.sep}prefect{os.sep}" not in record.pathname:
            sys.stdout.write(record.getMessage() + "\n")
            sys.stdout.flush()


def echo_run_lines() -> None:
    """Show the flows' own log lines on stdout, in whatever process runs the flow (the CLI, `finsent serve`'s
    flow-run processes, a worker's); idempotent."""
    for name in ("prefect.flow_runs", "prefect.task_runs"):
        run_logger = logging.getLogger(name)
        if not any(isinstance(handler, _RunLinesToStdout) for handler in run_logger.handlers):
            run_logger.addHandler(_RunLinesToStdout())
