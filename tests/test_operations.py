"""Operations: failure notifications (a real webhook receiver on loopback), the scheduled retraining
deployment served by `finsent serve` against a real `prefect server start`, the work-pool deployment of
prefect.yaml, and the global concurrency limit that lets one flow run promote at a time. No Prefect mocks."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import yaml

from projects import FINSENT, GATES_OFF, REPO, make_project
from servers import call_json, free_port, wait_for

PREFECT = str(Path(sys.executable).parent / "prefect")


# --- a webhook receiver ------------------------------------------------------------------------------------------

class Receiver:
    """An HTTP server on loopback recording every POST; ``status`` is what it answers, after ``delay`` s."""

    def __init__(self, status: int = 200, delay: float = 0.0):
        received, self.status, self.delay = [], status, delay
        self.posts = received
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append({"path": self.path, "content_type": self.headers.get("Content-Type"),
                                 "body": json.loads(body)})
                time.sleep(owner.delay)
                self.send_response(owner.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver():
    server = Receiver()
    yield server
    server.close()


def _env(**extra: str) -> dict:
    """The environment of a user's shell: nothing of the test process's MLflow / Prefect settings."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_", "FINSENT_"))}
    clean.update(HF_HUB_OFFLINE="1", CI="true", **extra)
    return clean


# --- notify.send ---------------------------------------------------------------------------------------------------

def test_send_posts_the_event_as_json(receiver, monkeypatch, capsys):
    from finsent import notify

    monkeypatch.setenv("FINSENT_WEBHOOK_URL", receiver.url)
    result = notify.send("monitor.alert", "negative-share spike for ACME", {"share_negative": 0.7, "rows": 40})
    assert result["webhook"] == "sent"
    assert len(receiver.posts) == 1
    post = receiver.posts[0]
    assert post["path"] == "/hook" and post["content_type"] == "application/json"
    assert set(post["body"]) == {"event", "message", "details", "time"}
    assert post["body"]["event"] == "monitor.alert" and post["body"]["message"] == "negative-share spike for ACME"
    assert post["body"]["details"] == {"share_negative": 0.7, "rows": 40}
    assert datetime.fromisoformat(post["body"]["time"]).utcoffset() is not None
    line = capsys.readouterr().err.strip()
    assert line == "finsent: monitor.alert: negative-share spike for ACME (webhook: sent)"


def test_a_failing_webhook_is_reported_never_raised(monkeypatch, capsys):
    from finsent import notify

    monkeypatch.setenv("FINSENT_WEBHOOK_URL", f"http://127.0.0.1:{free_port()}/nobody-listens")
    refused = notify.send("training.failed", "x")
    assert refused["webhook"].startswith("failed: ") and "refused" in refused["webhook"].lower(), refused

    erroring = Receiver(status=500)
    try:
        monkeypatch.setenv("FINSENT_WEBHOOK_URL", erroring.url)
        assert notify.send("training.failed", "x")["webhook"] == "failed: HTTP 500 Internal Server Error"
    finally:
        erroring.close()

    slow = Receiver(delay=2.0)
    try:
        monkeypatch.setenv("FINSENT_WEBHOOK_URL", slow.url)
        monkeypatch.setattr(notify, "TIMEOUT_SECONDS", 0.5)
        started = time.monotonic()
        assert notify.send("training.failed", "x")["webhook"].startswith("failed: ")
        assert time.monotonic() - started < 2.0
    finally:
        slow.close()

    monkeypatch.setenv("FINSENT_WEBHOOK_URL", "file:///etc/passwd")
    assert notify.send("training.failed", "x")["webhook"] == "failed: FINSENT_WEBHOOK_URL must be an http(s) URL"
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 4 and all(line.startswith("finsent: training.failed: x (webhook: failed: ") for line in lines)


def test_without_a_webhook_the_event_is_one_line(monkeypatch, capsys):
    from finsent import notify

    monkeypatch.delenv("FINSENT_WEBHOOK_URL", raising=False)
    result = notify.send("monitor.alert", "two\nlines")
    assert result == {"event": "monitor.alert", "message": "two\nlines", "webhook": "not configured"}
    assert capsys.readouterr().err == "finsent: monitor.alert: two lines (webhook: not configured)\n"


# --- schedule settings -------------------------------------------------------------------------------------------

def test_schedule_params_and_prefect_yaml_agree():
    from finsent.config import ScheduleParams, load_params

    schedule = load_params(REPO / "params.yaml").schedule
    assert schedule == ScheduleParams()
    deployment = yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"][0]
    assert deployment["name"] == schedule.deployment_name
    assert deployment["entrypoint"] == "pipelines/training.py:training_flow"
    assert deployment["schedules"] == [{"cron": schedule.cron, "timezone": schedule.timezone, "active": True}]
    assert deployment["concurrency_limit"] == schedule.max_concurrent_runs
    # crash detection judges only runs with the heartbeat tag: the tag and the heartbeat setting go together
    from pipelines.deployment import HEARTBEAT_SECONDS, HEARTBEAT_TAG

    assert HEARTBEAT_TAG in deployment["tags"]
    assert deployment["work_pool"]["job_variables"]["env"]["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == str(HEARTBEAT_SECONDS)


def test_bad_schedule_values_are_one_line_errors(tmp_path):
    sys.path.insert(0, str(REPO))
    from finsent.config import ScheduleParams, load_params
    from finsent.errors import FinsentError
    from pipelines.deployment import schedule_of

    assert schedule_of(ScheduleParams()).cron == "0 6 * * 1-5"
    with pytest.raises(FinsentError, match=r'^params: schedule.cron: Invalid cron string: "0 6 \* \*"$'):
        schedule_of(ScheduleParams(cron="0 6 * *"))
    params = tmp_path / "params.yaml"
    params.write_text("schedule: {timezone: Mars/Olympus}\n")
    with pytest.raises(FinsentError, match="schedule.timezone 'Mars/Olympus' is not an IANA time zone"):
        load_params(params)
    params.write_text("schedule: {concurrency_limit: 0}\n")
    with pytest.raises(FinsentError, match="schedule.concurrency_limit must be an integer >= 1"):
        load_params(params)


def test_serve_without_a_prefect_server_is_one_line(tmp_path):
    result = subprocess.run([FINSENT, "serve"], cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "finsent: error: finsent serve needs a Prefect server: start one (prefect server start) and set "
        "PREFECT_API_URL (e.g. http://127.0.0.1:4200/api); the embedded API of `finsent run` cannot run "
        "scheduled deployments"]


# --- the failure hook, end to end ----------------------------------------------------------------------------------

@pytest.mark.e2e
def test_a_failed_training_run_posts_one_notification(tmp_path, receiver):
    project = make_project(tmp_path / "project", 10)
    (project / "data" / "empty.csv").write_bytes(b"")
    result = subprocess.run([FINSENT, "run", "--data", "data/empty.csv"], cwd=project, capture_output=True, text=True,
                            timeout=600, env=_env(FINSENT_WEBHOOK_URL=receiver.url))
    assert result.returncode == 2, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert len(receiver.posts) == 1, receiver.posts
    body = receiver.posts[0]["body"]
    assert body["event"] == "training.failed"
    assert "ended Failed: stage 'sources':" in body["message"] and "empty.csv: file is empty" in body["message"]
    assert body["details"]["state"] == "Failed" and body["details"]["flow"] == "finsent-training"
    assert body["details"]["project_dir"] == str(project) and body["details"]["deployment_id"] is None
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 2 and "finsent: training.failed: flow run" in errors[0] and "(webhook: sent)" in errors[0]
    assert errors[1].startswith("finsent: error: stage 'sources':")

    # no webhook: an interactive run keeps its one error line (the CLI's own report is the notification)
    quiet = subprocess.run([FINSENT, "run", "--data", "data/empty.csv"], cwd=project, capture_output=True, text=True,
                           timeout=600, env=_env())
    assert quiet.returncode == 2 and len(receiver.posts) == 1
    assert [line for line in quiet.stderr.splitlines() if line.strip()] == [errors[1]]


@pytest.mark.e2e
def test_an_embedded_run_promotes_without_a_prefect_slot(tmp_path, tiny_base):
    """`finsent run` (its own local Prefect API, no server): the project's run lock lets one run at a time, so
    the promotion takes no slot of the 'finsent-promotion' limit and creates none in the project's database."""
    import sqlite3

    project = make_project(tmp_path / "embedded", 20, model={"base": str(tiny_base), "max_length": 32},
                           train={"epochs": 1}, gate=GATES_OFF)
    result = subprocess.run([FINSENT, "run"], cwd=project, capture_output=True, text=True, timeout=600, env=_env())
    assert result.returncode == 0, result.stdout + result.stderr
    assert "decision: promoted v1 to champion" in result.stdout
    with contextlib.closing(sqlite3.connect(project / ".finsent" / "prefect" / "prefect.db")) as db:
        assert db.execute("SELECT name FROM concurrency_limit_v2").fetchall() == []
        assert db.execute("SELECT count(*) FROM flow_run WHERE state_type = 'COMPLETED'").fetchone() == (1,)


# --- against a real Prefect server ------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def prefect_server(tmp_path_factory):
    """`prefect server start` on a free loopback port (SQLite in a temp PREFECT_HOME, no UI, no background
    services: runs are triggered here, not by the scheduler); yields its API URL."""
    home = tmp_path_factory.mktemp("prefect_home")
    port = free_port()
    log = (home / "server.log").open("w")
    process = subprocess.Popen([PREFECT, "server", "start", "--host", "127.0.0.1", "--port", str(port),
                                "--no-services", "--no-ui"], stdout=log, stderr=subprocess.STDOUT, text=True,
                               env=_env(PREFECT_HOME=str(home), PREFECT_SERVER_ANALYTICS_ENABLED="false",
                                        DO_NOT_TRACK="1"))
    try:
        wait_for(f"http://127.0.0.1:{port}/api/health", process, timeout=120)
        yield f"http://127.0.0.1:{port}/api"
    finally:
        _stop(process)
        log.close()


def _stop(process: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30, group: bool = False) -> int:
    """Signal ``process`` (``group``: its whole process group, as a terminal's Ctrl-C does) and wait for it."""
    if process.poll() is None:
        if group:
            os.killpg(process.pid, sig)
        else:
            process.send_signal(sig)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            tree = subprocess.run(["ps", "-o", "pid,ppid,etime,stat,args", "-g", str(process.pid)],
                                  capture_output=True, text=True).stdout
            print(f"still running {timeout:.0f} s after signal {sig}; its process group:\n{tree}")
            with contextlib.suppress(ProcessLookupError):  # PYTHONFAULTHANDLER: each prints where it waits
                os.killpg(process.pid, signal.SIGABRT)
            time.sleep(5)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    return process.returncode


def _deployment(api: str, name: str, process: subprocess.Popen | None = None, timeout: float = 120) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise AssertionError(f"exited with {process.returncode}")
        with contextlib.suppress(OSError):
            return call_json(f"{api}/deployments/name/{name}")
        time.sleep(1)
    raise TimeoutError(f"deployment {name} not registered within {timeout} s")


@pytest.mark.e2e
def test_served_deployment_runs_the_training_flow(prefect_server, tmp_path, tiny_base):
    project = make_project(tmp_path / "served", 20, model={"base": str(tiny_base), "max_length": 32},
                           train={"epochs": 1}, gate=GATES_OFF)
    log = (tmp_path / "serve.log").open("w")
    serve = subprocess.Popen([FINSENT, "serve"], cwd=project, stdout=log, stderr=subprocess.STDOUT, text=True,
                             env=_env(PREFECT_API_URL=prefect_server, PYTHONFAULTHANDLER="1"),
                             start_new_session=True)
    try:
        deployment = _deployment(prefect_server, "finsent-training/scheduled-retraining", serve)
        assert deployment["parameters"] == {"project_dir": str(project)}
        form = deployment["parameter_openapi_schema"]["properties"]  # the UI's custom-run form
        assert set(form) == {"project_dir", "data", "overrides"} and "train.epochs=2" in form["overrides"]["description"]
        [schedule] = deployment["schedules"]
        assert schedule["active"] and schedule["schedule"]["cron"] == "0 6 * * 1-5"
        assert schedule["schedule"]["timezone"] == "UTC"
        assert deployment["global_concurrency_limit"]["limit"] == 1

        started = time.monotonic()
        trigger = subprocess.run([PREFECT, "deployment", "run", "finsent-training/scheduled-retraining",
                                  "--params", json.dumps({"overrides": ["train.seed=3"]})],  # as the UI form sends
                                 cwd=project, capture_output=True, text=True, timeout=120,
                                 env=_env(PREFECT_API_URL=prefect_server, PREFECT_HOME=str(tmp_path / "cli_home")))
        assert trigger.returncode == 0, trigger.stdout + trigger.stderr
        deadline, run = started + 300, None
        while time.monotonic() < deadline:
            runs = call_json(f"{prefect_server}/flow_runs/filter", "POST",
                             {"deployments": {"id": {"any_": [deployment["id"]]}}})
            run = runs[0] if runs else None
            if run and run["state"]["type"] in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED"):
                break
            assert serve.poll() is None, f"finsent serve exited with {serve.returncode}"
            time.sleep(2)
        elapsed = time.monotonic() - started
        log.flush()
        output = (tmp_path / "serve.log").read_text()
        assert run is not None and run["state"]["type"] == "COMPLETED", f"{run and run['state']}\n{output}"
        assert run["name"] == "train · slice.csv · lora", run["name"]
        print(f"\ntriggered run completed: {elapsed:.1f} s from `prefect deployment run` to Completed "
              f"(flow run {run['total_run_time']:.1f} s)")
        assert "train     done" in output and "evaluate  done" in output, output

        import mlflow

        client = mlflow.MlflowClient(f"sqlite:///{project / '.finsent' / 'mlflow.db'}")
        champion = client.get_model_version_by_alias("finsent-sentiment", "champion")
        assert str(champion.version) == "1" and champion.tags["finsent.promotion"].startswith("promoted")
        assert client.get_run(champion.run_id).data.params["train.seed"] == "3"  # the run's override...
        assert "seed: 42" in (project / "params.yaml").read_text()  # ... for that run only
        logs = call_json(f"{prefect_server}/logs/filter", "POST", {"logs": {"flow_run_id": {"any_": [run["id"]]}}})
        assert any(line["message"].strip().startswith("train     done") for line in logs)  # the UI's Logs tab
        limit = call_json(f"{prefect_server}/v2/concurrency_limits/finsent-promotion")
        assert limit["limit"] == 1 and limit["active_slots"] == 0  # created by the run, its slot given back
    finally:
        # Ctrl-C: SIGINT to the terminal's foreground process group, i.e. also to the runner's flow-run processes
        code = _stop(serve, signal.SIGINT, timeout=120, group=True)
        log.close()
    output = (tmp_path / "serve.log").read_text()
    assert code == 0, f"finsent serve did not stop cleanly on Ctrl-C (exit {code}):\n{output[-6000:]}"
    assert "finsent: stopped; the schedule is paused" in output, output[-3000:]
    assert call_json(f"{prefect_server}/deployments/name/finsent-training/scheduled-retraining")["paused"] is True
    assert "Traceback" not in output, output[-6000:]
    deadline = time.monotonic() + 30  # what the runner started (its flow runs' helpers) goes with it
    while time.monotonic() < deadline and _group_alive(serve.pid):
        time.sleep(0.5)
    assert not _group_alive(serve.pid), subprocess.run(["ps", "-o", "pid,args", "-g", str(serve.pid)],
                                                       capture_output=True, text=True).stdout


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


SLOT_HOLDER = """
import json, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[1])
from finsent.config import ScheduleParams
from prefect.concurrency.asyncio import AcquireConcurrencySlotTimeoutError
from finsent.release import promotion_slot

folder, me, timeout, delay, hold = Path(sys.argv[2]), sys.argv[3], *map(float, sys.argv[4:7])
(folder / f"ready-{me}").touch()
while not (folder / "go").exists():
    time.sleep(0.05)
time.sleep(delay)
asked = time.time()
try:
    with promotion_slot(ScheduleParams(concurrency_limit=1, promotion_timeout_seconds=timeout)):
        entered = time.time()
        time.sleep(hold)
        left = time.time()
except AcquireConcurrencySlotTimeoutError:  # what the flow turns into a refused promotion
    entered = left = None
print(json.dumps({"asked": asked, "entered": entered, "left": left, "timed_out": entered is None}))
"""


def _race(api: str, folder: Path, timeouts: tuple[float, float] = (120, 120), late_by: float = 0.0,
          hold: float = 2.0) -> list[dict]:
    """Two processes ask for the promotion slot at the same moment (the second ``late_by`` s later), each
    holds it ``hold`` s -> their timings, in the order they got the slot."""
    folder.mkdir()
    env = _env(PREFECT_API_URL=api, PREFECT_HOME=str(folder / "home"), PREFECT_LOGGING_LEVEL="ERROR")
    processes = [subprocess.Popen([sys.executable, "-c", SLOT_HOLDER, str(REPO), str(folder), name, str(timeout),
                                   str(delay), str(hold)],
                                  env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for name, timeout, delay in zip("ab", timeouts, (0.0, late_by))]
    deadline = time.monotonic() + 120
    while not all((folder / f"ready-{name}").exists() for name in "ab"):
        assert time.monotonic() < deadline and all(p.poll() is None for p in processes), \
            [p.communicate()[1][-2000:] for p in processes if p.poll() is not None]
        time.sleep(0.1)
    (folder / "go").touch()
    timings = []
    for process in processes:
        out, err = process.communicate(timeout=180)
        assert process.returncode == 0, err[-3000:]
        timings.append(json.loads(out.strip().splitlines()[-1]))
    return sorted(timings, key=lambda t: t["entered"] or float("inf"))


@pytest.mark.e2e
def test_the_promotion_limit_lets_one_run_in_at_a_time(prefect_server, tmp_path):
    first, second = _race(prefect_server, tmp_path / "limit1")
    assert abs(first["asked"] - second["asked"]) < 0.5  # they did ask together
    assert second["entered"] >= first["left"]  # ... and never held the slot together
    assert second["entered"] - second["asked"] >= 1.5  # the second one waited for the first
    assert call_json(f"{prefect_server}/v2/concurrency_limits/finsent-promotion")["limit"] == 1

    # a run that cannot get the slot in time gets the error the flow turns into a refused promotion
    holder, late = _race(prefect_server, tmp_path / "timeout", timeouts=(120, 0.5), late_by=0.5)
    assert not holder["timed_out"] and late["timed_out"], (holder, late)
    limit = call_json(f"{prefect_server}/v2/concurrency_limits/finsent-promotion")
    assert limit["active_slots"] == 0  # nothing left held

    # control: with two slots the same race overlaps, so the check above can see an overlap. (On a SQLite
    # server two requests at the same instant are also serialised by the database: the loser gets a 503 and
    # the client retries ~2 s later; the 5 s hold keeps that from hiding the overlap.)
    call_json(f"{prefect_server}/v2/concurrency_limits/finsent-promotion", "PATCH", {"limit": 2})
    try:
        first, second = _race(prefect_server, tmp_path / "limit2", hold=5.0)
        assert second["entered"] < first["left"], (first, second)
    finally:
        call_json(f"{prefect_server}/v2/concurrency_limits/finsent-promotion", "PATCH", {"limit": 1})


@pytest.mark.e2e
def test_prefect_yaml_deploys_to_a_work_pool(prefect_server, tmp_path):
    project = make_project(tmp_path / "deployed", 10)
    (project / "prefect.yaml").write_text((REPO / "prefect.yaml").read_text())
    env = _env(PREFECT_API_URL=prefect_server, PREFECT_HOME=str(tmp_path / "cli_home"), PWD=str(project))
    for command in (["work-pool", "create", "finsent-process", "--type", "process"], ["deploy", "--all", "--no-prompt"]):
        result = subprocess.run([PREFECT, *command], cwd=project, env=env, capture_output=True, text=True, timeout=180)
        assert result.returncode == 0, result.stdout + result.stderr
    deployment = _deployment(prefect_server, "finsent-training/scheduled-retraining")
    assert deployment["work_pool_name"] == "finsent-process"
    assert deployment["entrypoint"] == "pipelines/training.py:training_flow"
    assert deployment["parameters"] == {"project_dir": str(project)}
    assert [s["schedule"]["cron"] for s in deployment["schedules"]] == ["0 6 * * 1-5"]
    assert deployment["pull_steps"] == [
        {"prefect.deployments.steps.set_working_directory": {"directory": str(project)}}]
    assert "MLFLOW_TRACKING_URI" not in deployment["job_variables"]["env"]  # the worker's environment decides
    assert deployment["global_concurrency_limit"]["limit"] == 1


def _review(api: str, run: subprocess.Popen, decision: dict, timeout: float = 300) -> dict:
    """Wait for the flow run to pause for its review, then submit ``decision`` through its Resume form (the API
    call the Prefect UI makes) -> the paused flow run."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert run.poll() is None, f"finsent run exited with {run.returncode} before pausing:\n{run.stdout.read()}"
        paused = call_json(f"{api}/flow_runs/filter", "POST", {"flow_runs": {"state": {"type": {"any_": ["PAUSED"]}}}})
        if paused:
            result = call_json(f"{api}/flow_runs/{paused[0]['id']}/resume", "POST", {"run_input": decision})
            if result["status"] == "ACCEPT":
                return paused[0]
            assert "schema not found" in str(result["details"]), result  # the form is saved just after the pause
        time.sleep(1)
    raise TimeoutError(f"no paused flow run within {timeout} s")


@pytest.mark.e2e
def test_a_challenger_waits_for_its_review_in_the_prefect_ui(prefect_server, tmp_path, tiny_base):
    """On a Prefect server the flow run pauses for the review of its challenger: the reviewer's approval in the
    Resume form makes it champion; a candidate nobody reviews in time stays challenger, and its run completes."""
    project = make_project(tmp_path / "reviewed", 20, model={"base": str(tiny_base), "max_length": 32},
                           train={"epochs": 1}, gate={**GATES_OFF, "require_approval": True, "servability_check": False,
                                                      "approval_wait_minutes": 5, "max_macro_f1_drop": 1.0,
                                                      "max_class_recall_drop": 1.0})
    env = _env(PREFECT_API_URL=prefect_server, FINSENT_ACTOR="alice")
    run = subprocess.Popen([FINSENT, "run"], cwd=project, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           env=env)
    try:
        paused = _review(prefect_server, run, {"approve": True, "reviewer": "bob", "reason": "validated"})
        output = run.communicate(timeout=300)[0]
    finally:
        _stop(run)
    assert run.returncode == 0, output
    assert "approval: waiting up to 5 min for a review of v1" in output
    assert "version 1 [champion] (new version)" in output and "promoted v1 to champion, approved by bob" in output
    assert call_json(f"{prefect_server}/flow_runs/{paused['id']}")["state"]["type"] == "COMPLETED"
    history = subprocess.run([FINSENT, "history"], cwd=project, capture_output=True, text=True, env=_env()).stdout
    assert "challenger: - -> v1  by alice" in history and "champion: - -> v1  by bob" in history

    unreviewed = subprocess.run([FINSENT, "run", "-S", "train.seed=5", "-S", "gate.approval_wait_minutes=0.1"],
                                cwd=project, capture_output=True, text=True, timeout=600, env=env)
    assert unreviewed.returncode == 0, unreviewed.stdout + unreviewed.stderr
    assert "version 2 [challenger] (new version)" in unreviewed.stdout
    assert "no review in the Prefect UI within 0.1 min, so v2 stays challenger" in unreviewed.stdout
    runs = call_json(f"{prefect_server}/flow_runs/filter", "POST", {"sort": "START_TIME_DESC", "limit": 1})
    assert runs[0]["state"]["type"] == "COMPLETED", runs[0]["state"]
