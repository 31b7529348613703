"""The MLflow run of one training flow run: opened when the flow starts, closed with the flow's outcome.

So the run lasts as long as the flow (its duration in the MLflow UI is the real one), a failed run is visible
as FAILED with the failing step as its description, and the Prefect flow run and the MLflow run name each
other. The candidate's params, metrics, datasets, reports and model are logged into this run at registration
(``registry.log_candidate``).
"""

from __future__ import annotations

import contextlib
import getpass
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from finsent.config import Params
from finsent.registry import tracking_step

PREFECT_FLOW_RUN_TAG = "finsent.prefect.flow_run_id"
PREFECT_URL_TAG = "finsent.prefect.flow_run_url"
FAILURE_TAG = "finsent.failure"


@dataclass
class FlowRunRecord:
    run_id: str
    experiment_id: str
    failure: str | None = None

    def fail(self, message: str) -> str:
        """Mark the flow run failed (the MLflow run ends FAILED, ``message`` as its description) -> ``message``."""
        self.failure = message
        return message

    def ui_path(self) -> str:
        """Where `mlflow ui` shows this run, relative to the UI's address."""
        return f"#/experiments/{self.experiment_id}/runs/{self.run_id}"


def _prefect_flow_run() -> dict[str, str]:
    """The Prefect flow run this code runs in: its id, and its UI address when the API has a UI."""
    try:
        from prefect.runtime import flow_run

        found = {PREFECT_FLOW_RUN_TAG: flow_run.id, PREFECT_URL_TAG: flow_run.ui_url}
    except Exception:  # outside a flow run, or no API: nothing to link
        return {}
    if not str(found[PREFECT_URL_TAG]).startswith(("http://", "https://")):  # the embedded API has no UI
        found.pop(PREFECT_URL_TAG)
    return {key: str(value) for key, value in found.items() if value}


def open_stores() -> None:
    """Open MLflow's tracking and registry stores ahead of the flow's first MLflow call: a database store checks
    its schema on first use (0.7 s with the embedded SQLite), time a run can spend while it waits for its Prefect
    API. A store that fails here is left for the flow's own steps to report."""
    from mlflow import MlflowClient, get_tracking_uri

    if get_tracking_uri().startswith(("http://", "https://")):  # a server: nothing to open, and no retries here
        return
    with contextlib.suppress(Exception):
        client = MlflowClient()
        client.search_experiments(max_results=1)
        client.search_registered_models(max_results=1)


@tracking_step("open the MLflow run")
def open_run(root: Path, params: Params) -> FlowRunRecord:
    """A RUNNING MLflow run in the project's experiment, named for a person:
    'train · financial_news.csv · lora · 2026-12-03 10:25' (UTC), with MLflow's own source tags."""
    from mlflow import MlflowClient

    from finsent import __version__
    from finsent.runtime import project_experiment_id
    from finsent.versioning import code_revision

    client = MlflowClient()
    experiment_id = project_experiment_id(client, params.registry.experiment, root)
    commit = str(code_revision(root).get("commit"))
    tags = {"mlflow.source.git.commit": commit, "mlflow.source.name": "finsent run (pipelines/training.py)",
            "mlflow.user": getpass.getuser(),
            "mlflow.source.type": "PROJECT", "finsent.version": __version__,
            "finsent.peft_method": params.peft.method, **_prefect_flow_run()}
    started = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M")
    run = client.create_run(experiment_id, run_name=f"{params.run_label()} · {started}", tags=tags)
    return FlowRunRecord(run.info.run_id, experiment_id)


def close_run(record: FlowRunRecord) -> None:
    """FINISHED, or FAILED with the failure as tag and description. Never raises: an unreachable tracking server
    must not hide the flow's own outcome."""
    from mlflow import MlflowClient

    client = MlflowClient()
    with contextlib.suppress(Exception):
        if record.failure:
            client.set_tag(record.run_id, FAILURE_TAG, record.failure[:5000])
            client.set_tag(record.run_id, "mlflow.note.content", f"# finsent run failed\n\n{record.failure}")
        client.set_terminated(record.run_id, "FAILED" if record.failure else "FINISHED")


@contextlib.contextmanager
def flow_run_record(root: Path, params: Params):
    """The flow's MLflow run for the ``with`` block: FAILED when the block raises or called ``fail``, else
    FINISHED."""
    record = open_run(root, params)
    try:
        yield record
    except BaseException as exc:
        record.fail(str(exc) or type(exc).__name__)
        close_run(record)
        raise
    close_run(record)


def link_artifact(record: FlowRunRecord) -> None:
    """A link from the Prefect flow run to its MLflow run (when MLflow is a server with a UI address)."""
    import mlflow
    from prefect.artifacts import create_link_artifact, create_markdown_artifact

    from finsent.runtime import redact

    uri = redact(mlflow.get_tracking_uri())  # never a password in a Prefect artifact
    if uri.startswith(("http://", "https://")):
        create_link_artifact(link=f"{uri.rstrip('/')}/{record.ui_path()}", link_text=f"MLflow run {record.run_id}",
                             key="finsent-mlflow-run")
    else:
        create_markdown_artifact(markdown=f"MLflow run `{record.run_id}` in `{uri}`: `mlflow ui --backend-store-uri "
                                          f"{uri}`, then open `{record.ui_path()}`", key="finsent-mlflow-run")
