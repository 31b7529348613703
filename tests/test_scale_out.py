"""Scale-out on loopback: the same project run by a Prefect worker against team servers, configured by
environment variables only.

Real processes, as infra/compose runs them (no Docker engine here): `mlflow server` with the basic-auth app,
its backend store a fresh PostgreSQL database and artifacts proxied (`--serve-artifacts`); `prefect server`
on another fresh PostgreSQL database behind an auth string; a `prefect worker` of a process work pool; and,
standing in for MinIO / S3, moto's S3-compatible server as the DVC remote. The test deploys prefect.yaml,
triggers the flow, finds the champion in that MLflow server and the outputs in that bucket (re-hashed from a
fresh clone), greps every log of the run for the secrets, then stops MLflow while a run waits to promote.
"""

from __future__ import annotations

import base64
import configparser
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import uuid
from pathlib import Path

import pytest

from projects import make_project, set_params
from servers import call_json, drop_postgres_database, free_port, postgres_database, start_process, stop_process

pytestmark = pytest.mark.e2e
BIN = Path(sys.executable).parent
MODEL = "finsent-sentiment"
DEPLOYMENT = "finsent-training/scheduled-retraining"
GATES_OFF = {"min_macro_f1": 0.0, "min_accuracy": 0.0, "min_class_recall": 0.0, "max_ece": 1.0,
             "max_macro_f1_drop": 1.0, "max_class_recall_drop": 1.0, "max_latency_ratio": None}


class Stack:
    """The servers, their URLs and secrets; ``env`` is what a user of the team's servers exports."""

    def __init__(self, folder: Path, mlflow_db: str, prefect_db: str):
        self.folder = folder
        self.mlflow_db = mlflow_db
        self.mlflow_port, self.prefect_port, self.s3_port = free_port(), free_port(), free_port()
        self.mlflow_url = f"http://127.0.0.1:{self.mlflow_port}"
        self.prefect_api = f"http://127.0.0.1:{self.prefect_port}/api"
        self.s3_url = f"http://127.0.0.1:{self.s3_port}"
        self.secrets = {"mlflow": f"mlf-{uuid.uuid4().hex}", "prefect": f"pf-{uuid.uuid4().hex}",
                        "aws": f"aws-{uuid.uuid4().hex}"}
        self.bucket = "finsent-dvc"
        self.env = {**_clean_env(),
                    "MLFLOW_TRACKING_URI": self.mlflow_url, "MLFLOW_TRACKING_USERNAME": "finsent-admin",
                    "MLFLOW_TRACKING_PASSWORD": self.secrets["mlflow"],
                    "PREFECT_API_URL": self.prefect_api, "PREFECT_API_AUTH_STRING": f"admin:{self.secrets['prefect']}",
                    "FINSENT_DVC_REMOTE_URL": f"s3://{self.bucket}/finsent", "AWS_ENDPOINT_URL": self.s3_url,
                    "AWS_ACCESS_KEY_ID": "finsent-key", "AWS_SECRET_ACCESS_KEY": self.secrets["aws"],
                    "AWS_DEFAULT_REGION": "us-east-1",
                    # fail fast while the tracking server is down (the flow's own task retries still apply)
                    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1", "MLFLOW_HTTP_REQUEST_TIMEOUT": "10"}
        auth = configparser.ConfigParser()
        auth["mlflow"] = {"default_permission": "READ", "database_uri": f"sqlite:///{folder / 'mlflow-auth.db'}",
                          "admin_username": "finsent-admin",
                          "authorization_function": "mlflow.server.auth:authenticate_request_basic_auth"}
        with (folder / "basic_auth.ini").open("w") as handle:
            auth.write(handle)
        self.prefect_db = prefect_db
        self.processes: dict[str, subprocess.Popen] = {}

    def start_mlflow(self) -> None:
        command = [str(BIN / "mlflow"), "server", "--app-name", "basic-auth", "--backend-store-uri", self.mlflow_db,
                   "--artifacts-destination", str(self.folder / "mlflow-artifacts"), "--serve-artifacts",
                   "--host", "127.0.0.1", "--port", str(self.mlflow_port), "--workers", "1"]
        env = {**_clean_env(), "MLFLOW_AUTH_CONFIG_PATH": str(self.folder / "basic_auth.ini"),
               "MLFLOW_AUTH_ADMIN_PASSWORD": self.secrets["mlflow"],
               "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex}
        self.processes["mlflow"] = start_process(command, env, f"{self.mlflow_url}/health", self.folder / "mlflow.log")

    def start_prefect(self) -> None:
        command = [str(BIN / "prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(self.prefect_port),
                   "--no-ui"]  # with its services: automations (crash detection) need them
        env = {**_clean_env(), "PREFECT_HOME": str(self.folder / "prefect-server-home"),
               "PREFECT_API_DATABASE_CONNECTION_URL": self.prefect_db,
               "PREFECT_SERVER_API_AUTH_STRING": f"admin:{self.secrets['prefect']}",
               "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "1"}
        self.processes["prefect"] = start_process(command, env, f"{self.prefect_api}/health",
                                                  self.folder / "prefect-server.log", timeout=180)

    def start_s3(self) -> None:
        command = [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(self.s3_port)]
        self.processes["s3"] = start_process(command, _clean_env(), f"{self.s3_url}/moto-api/", self.folder / "s3.log")
        self.s3().create_bucket(Bucket=self.bucket)

    def start_worker(self, project: Path) -> None:
        log = (self.folder / "worker.log").open("a")
        self.processes["worker"] = subprocess.Popen(
            [str(BIN / "prefect"), "worker", "start", "--pool", "finsent-process", "--type", "process"],
            cwd=project, stdout=log, stderr=subprocess.STDOUT, text=True, start_new_session=True,
            env={**self.env, "PREFECT_HOME": str(self.folder / "worker-home"), "PREFECT_LOGGING_LEVEL": "INFO"})
        log.close()

    def kill_worker(self) -> int:
        """SIGKILL the worker and every process under it (its flow runs), as when its machine dies. The tree is
        frozen first (SIGSTOP) until no new child appears, so nothing it starts meanwhile escapes."""
        import psutil

        worker = psutil.Process(self.processes["worker"].pid)
        tree: dict[int, psutil.Process] = {}
        while True:
            found = {p.pid: p for p in [worker, *worker.children(recursive=True)] if p.pid not in tree}
            if not found:
                break
            for process in found.values():
                process.suspend()
            tree.update(found)
        for process in tree.values():
            process.kill()
        gone, alive = psutil.wait_procs(list(tree.values()), timeout=30)
        assert not alive, alive
        self.processes["worker"].wait()
        return len(tree)

    def s3(self):
        import boto3

        return boto3.client("s3", endpoint_url=self.s3_url, aws_access_key_id="finsent-key",
                            aws_secret_access_key=self.secrets["aws"], region_name="us-east-1")

    def prefect(self, path: str, body: dict | None = None, method: str | None = None):
        return _call(f"{self.prefect_api}{path}", ("admin", self.secrets["prefect"]), body, method)

    def mlflow(self, path: str, **query: str):
        url = f"{self.mlflow_url}/api/2.0/mlflow/{path}" + (f"?{urllib.parse.urlencode(query)}" if query else "")
        return _call(url, ("finsent-admin", self.secrets["mlflow"]))

    def champion_version(self) -> str | None:
        try:
            return self.mlflow("registered-models/alias", name=MODEL, alias="champion")["model_version"]["version"]
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                return None
            raise

    def stop(self) -> None:
        for process in reversed(list(self.processes.values())):
            stop_process(process)


def _clean_env() -> dict:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_", "FINSENT_", "AWS_"))}
    clean.update(HF_HUB_OFFLINE="1", CI="true", PREFECT_SERVER_ANALYTICS_ENABLED="false", DO_NOT_TRACK="1")
    return clean


def _call(url: str, auth: tuple[str, str], body: dict | None = None, method: str | None = None):
    token = base64.b64encode(":".join(auth).encode()).decode()
    return call_json(url, method, body, headers={"Authorization": f"Basic {token}"})


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    mlflow_db, why = postgres_database()
    if mlflow_db is None:
        pytest.skip(f"the scale-out test runs its MLflow and Prefect servers on PostgreSQL: {why}")
    prefect_db = postgres_database()[0].replace("postgresql+psycopg2://", "postgresql+asyncpg://", 1)
    servers = Stack(tmp_path_factory.mktemp("stack"), mlflow_db, prefect_db)
    try:
        servers.start_s3()
        servers.start_mlflow()
        servers.start_prefect()
        yield servers
    finally:
        servers.stop()
        for url in (mlflow_db, prefect_db):
            drop_postgres_database(url)


def _cli(stack: Stack, project: Path, *command: str, timeout: float = 300) -> subprocess.CompletedProcess:
    env = {**stack.env, "PREFECT_HOME": str(stack.folder / "cli-home"), "PWD": str(project)}
    return subprocess.run(list(command), cwd=project, env=env, capture_output=True, text=True, timeout=timeout)


def _trigger(stack: Stack, deployment_id: str) -> str:
    run = stack.prefect(f"/deployments/{deployment_id}/create_flow_run", {})
    return run["id"]


def _wait_run(stack: Stack, run_id: str, timeout: float = 420) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = stack.prefect(f"/flow_runs/{run_id}")
        if run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
            return run
        assert stack.processes["worker"].poll() is None, (stack.folder / "worker.log").read_text()[-3000:]
        time.sleep(2)
    raise AssertionError(f"flow run {run_id} not finished in {timeout} s: {run['state']}\n"
                         f"{(stack.folder / 'worker.log').read_text()[-3000:]}")


def _task_state(stack: Stack, run_id: str, task: str) -> str | None:
    """State of the flow run's task run named ``task`` (recorded by the server's services from run events)."""
    runs = stack.prefect("/task_runs/filter", {"flow_runs": {"id": {"any_": [run_id]}}})
    states = [r["state"]["type"] for r in runs if r["name"] == task or r["name"].startswith(f"{task}-")]
    return states[-1] if states else None


def _flow_logs(stack: Stack, run_id: str) -> str:
    logs, page = [], None
    while page is None or len(page) == 200:  # the API's largest page
        page = stack.prefect("/logs/filter", {"logs": {"flow_run_id": {"any_": [run_id]}}, "limit": 200,
                                              "offset": len(logs)})
        logs += page
    return "\n".join(entry["message"] for entry in logs)


@pytest.fixture(scope="module")
def team(stack, tmp_path_factory, tiny_base) -> tuple[Path, dict, str]:
    """A project deployed from prefect.yaml to the server's process pool, a worker polling it; `finsent doctor`
    run first -> (project, deployment, doctor's output)."""
    project = make_project(tmp_path_factory.mktemp("team") / "project", 20,
                           model={"base": str(tiny_base), "max_length": 32},
                           train={"epochs": 1, "checkpoint_every_steps": 0}, gate=GATES_OFF)
    (project / "prefect.yaml").write_text((Path(__file__).resolve().parents[1] / "prefect.yaml").read_text())

    doctor = _cli(stack, project, str(BIN / "finsent"), "doctor")
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    print(f"\n{doctor.stdout}")
    assert "auth OK as 'finsent-admin'" in doctor.stdout and "DVC remote 'env' s3://finsent-dvc/finsent: writable" \
        in doctor.stdout, doctor.stdout

    for command in (["work-pool", "create", "finsent-process", "--type", "process"], ["deploy", "--all", "--no-prompt"]):
        result = _cli(stack, project, str(BIN / "prefect"), *command)
        assert result.returncode == 0, result.stdout + result.stderr
    deployment = stack.prefect(f"/deployments/name/{DEPLOYMENT}")
    # the crash-detection automation, as `finsent serve` creates it at start (a worker's first run creates it too)
    created = _cli(stack, project, sys.executable, "-c", "from pipelines.deployment import ensure_crash_detection; "
                                                          "print(ensure_crash_detection())")
    assert created.returncode == 0 and created.stdout.strip() == "True", created.stdout + created.stderr
    stack.start_worker(project)
    return project, deployment, doctor.stdout + doctor.stderr


def test_a_worker_trains_against_team_servers(stack, team, tmp_path):
    project, deployment, doctor_output = team
    started = time.monotonic()
    run = _wait_run(stack, _trigger(stack, deployment["id"]))
    logs = _flow_logs(stack, run["id"])
    assert run["state"]["type"] == "COMPLETED", f"{run['state']}\n{logs}\n{(stack.folder / 'worker.log').read_text()}"
    print(f"\nworker run against the team servers: Completed in {time.monotonic() - started:.1f} s")
    assert stack.champion_version() == "1"  # registered and promoted in the MLflow server, not in a local store
    assert not (project / ".finsent" / "mlflow.db").exists()

    # the DVC outputs went to the S3-compatible bucket; a fresh clone pulls them from there and re-hashes them
    objects = stack.s3().list_objects_v2(Bucket=stack.bucket, Prefix="finsent/")
    assert objects["KeyCount"] > 5, objects
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(project), str(clone)], check=True)
    verified = _cli(stack, clone, str(BIN / "finsent"), "lineage", "verify", f"{MODEL}@champion")
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.rstrip().endswith("0 mismatch, 0 missing") and "remote ok" in verified.stdout, \
        verified.stdout

    # no configured secret in any log of the run, in MLflow's record of it, or in the project's outputs
    version = stack.mlflow("model-versions/get", name=MODEL, version="1")["model_version"]
    record = json.dumps(_call(f"{stack.mlflow_url}/api/2.0/mlflow/runs/get?run_id={version['run_id']}",
                              ("finsent-admin", stack.secrets["mlflow"])))
    texts = {"worker log": (stack.folder / "worker.log").read_text(), "flow-run logs": logs, "MLflow run": record,
             "doctor": doctor_output, "params.yaml": (project / "params.yaml").read_text()}
    texts.update({str(p.relative_to(project)): p.read_text(errors="ignore")
                  for p in (project / "reports").rglob("*") if p.is_file() and p.suffix in (".json", ".md", ".txt")})
    forms = {name: (secret, base64.b64encode(secret.encode()).decode()[:-4]) for name, secret in stack.secrets.items()}
    forms["prefect auth header"] = (base64.b64encode(f"admin:{stack.secrets['prefect']}".encode()).decode(),)
    forms["mlflow auth header"] = (base64.b64encode(f"finsent-admin:{stack.secrets['mlflow']}".encode()).decode(),)
    leaks = [(where, name) for where, text in texts.items() for name, variants in forms.items()
             if any(variant in text for variant in variants)]
    assert not leaks, leaks

    # MLflow goes down while a run waits for its promotion slot: the run fails after its retries, saying so,
    # and no alias moves; after a restart the next run completes
    set_params(project, train={"epochs": 1, "checkpoint_every_steps": 0, "seed": 7})
    stack.prefect("/v2/concurrency_limits/finsent-promotion", {"active_slots": 1}, "PATCH")  # someone promoting
    run_id = _trigger(stack, deployment["id"])
    started = time.monotonic()
    while _task_state(stack, run_id, "register") != "COMPLETED":  # registered -> it now waits for the slot
        assert time.monotonic() < started + 600, _flow_logs(stack, run_id)
        assert stack.prefect(f"/flow_runs/{run_id}")["state"]["type"] in ("SCHEDULED", "PENDING", "RUNNING")
        time.sleep(1)
    print(f"second run registered its candidate after {time.monotonic() - started:.1f} s; stopping MLflow")
    stop_process(stack.processes["mlflow"])
    stack.prefect("/v2/concurrency_limits/finsent-promotion", {"active_slots": 0}, "PATCH")
    failed = _wait_run(stack, run_id)
    message = failed["state"]["message"] or ""
    print(f"flow run with MLflow down: {failed['state']['name']}: {message}")
    assert failed["state"]["type"] == "FAILED", failed["state"]
    assert f"MLflow tracking server {stack.mlflow_url} not reachable during 'promote' (Connection refused)" \
        in message, message

    stack.start_mlflow()
    assert stack.champion_version() == "1"  # the failed run moved nothing
    rerun = _wait_run(stack, _trigger(stack, deployment["id"]))
    assert rerun["state"]["type"] == "COMPLETED", f"{rerun['state']}\n{_flow_logs(stack, rerun['id'])}"
    assert stack.champion_version() == "2", stack.mlflow("registered-models/get", name=MODEL)


def test_a_run_whose_worker_dies_is_marked_crashed_and_the_next_run_goes_on(stack, team):
    """The worker and its flow-run process are SIGKILLed mid-training: the run's heartbeats stop, the crash
    detection automation (created by the flow) marks it Crashed, which frees the deployment's concurrency slot;
    a new worker then picks up the next scheduled run and completes it."""
    project, deployment, _ = team
    set_params(project, train={"epochs": 1, "checkpoint_every_steps": 0, "seed": 11})
    run_id = _trigger(stack, deployment["id"])
    deadline = time.monotonic() + 300
    while _task_state(stack, run_id, "train") != "RUNNING":  # killed while training
        assert time.monotonic() < deadline, stack.prefect(f"/flow_runs/{run_id}")["state"]
        time.sleep(1)
    killed = stack.kill_worker()
    killed_at = time.monotonic()
    assert stack.prefect(f"/flow_runs/{run_id}")["state"]["type"] == "RUNNING"  # nobody told the server

    while (state := stack.prefect(f"/flow_runs/{run_id}")["state"])["type"] == "RUNNING":
        assert time.monotonic() < killed_at + 300, "the killed run was never marked Crashed"
        time.sleep(3)
    print(f"\nkilled worker ({killed} processes): run marked {state['name']} after "
          f"{time.monotonic() - killed_at:.0f} s: {state['message']}")
    assert state["type"] == "CRASHED" and "no heartbeat" in state["message"], state

    stack.start_worker(project)
    scheduled = stack.prefect(f"/deployments/{deployment['id']}/create_flow_run", {"state": {
        "type": "SCHEDULED", "state_details": {"scheduled_time": _utc_in(5)}}})
    done = _wait_run(stack, scheduled["id"])
    assert done["state"]["type"] == "COMPLETED", f"{done['state']}\n{_flow_logs(stack, done['id'])}"
    assert stack.champion_version() == "3"


def _utc_in(seconds: float) -> str:
    from datetime import datetime, timedelta, timezone

    return (datetime.now(timezone.utc) + timedelta(seconds=seconds)).isoformat()
