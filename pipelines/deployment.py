"""Scheduled retraining: the training flow served as the Prefect deployment
``finsent-training/<schedule.deployment_name>`` on the cron of params.yaml (`finsent serve`).

``flow.serve`` registers the deployment (cron schedule, ``project_dir`` parameter, a limit of
``schedule.max_concurrent_runs`` runs at a time) with the Prefect API in PREFECT_API_URL and then polls it,
running each due or triggered run in a subprocess of this process. Stopping it (Ctrl-C, SIGTERM) pauses
the schedule. A schedule needs a Prefect server: the ephemeral API that `finsent run` starts runs no
scheduler service and lives only as long as its process. For running on a worker of a work pool instead,
see prefect.yaml (`prefect deploy`).
"""

from __future__ import annotations

from pathlib import Path

from finsent.config import ScheduleParams, load_params
from finsent.errors import FinsentError


def schedule_of(schedule: ScheduleParams):
    """The Prefect cron schedule of ``schedule``; a bad cron string is a one-line FinsentError."""
    from prefect.schedules import Cron

    try:
        return Cron(schedule.cron, timezone=schedule.timezone)
    except ValueError as exc:
        raise FinsentError(f"params: schedule.cron: {str(exc).splitlines()[0]}") from None


def serve(root: Path) -> None:
    """Register the deployment and serve it until interrupted (blocks)."""
    import os

    from pipelines.training import training_flow

    schedule = load_params(root / "params.yaml").schedule
    cron = schedule_of(schedule)
    os.environ["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(HEARTBEAT_SECONDS)  # the runs it starts: HEARTBEAT_TAG
    ensure_crash_detection()
    print(f"finsent: serving deployment 'finsent-training/{schedule.deployment_name}' "
          f"(cron '{schedule.cron}' {schedule.timezone}; project {root}); Ctrl-C stops it and pauses the schedule",
          flush=True)
    training_flow.serve(name=schedule.deployment_name, schedules=[cron], parameters={"project_dir": str(root)},
                        global_limit=schedule.max_concurrent_runs, tags=["finsent", "retraining", HEARTBEAT_TAG],
                        description="finsent scheduled retraining: stages, gate, register, promote, push "
                                    f"for the project in {root}")


CRASH_DETECTION = "finsent: crash unresponsive training runs"
HEARTBEAT_SECONDS = 30  # PREFECT_FLOWS_HEARTBEAT_FREQUENCY of served / worker runs (Prefect's minimum)
# Only runs carrying this tag are judged: their deployment promises heartbeats every HEARTBEAT_SECONDS (finsent
# serve, prefect.yaml). A run with Prefect's default (180 s) would otherwise be marked Crashed while healthy.
HEARTBEAT_TAG = "finsent-heartbeat-30s"


def ensure_crash_detection(flow_name: str = "finsent-training", silence_seconds: int = 3 * HEARTBEAT_SECONDS) -> bool:
    """The Prefect automation that marks a run of ``flow_name`` tagged HEARTBEAT_TAG Crashed when its heartbeats
    stop (its worker or machine died): otherwise it would stay Running forever and hold its deployment's
    concurrency slot, so no later scheduled run could start. Created once per server; -> True when created now."""
    from datetime import timedelta

    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    try:
        Automation.read(name=CRASH_DETECTION)
        return False
    except ValueError:  # not there yet
        pass
    Automation(
        name=CRASH_DETECTION,
        description=f"finsent: a {flow_name} run without a heartbeat for {silence_seconds} s is marked Crashed",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={"prefect.flow-run.heartbeat", "prefect.flow-run.Completed", "prefect.flow-run.Failed",
                    "prefect.flow-run.Cancelled", "prefect.flow-run.Crashed"},
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            match_related=[  # all of them: a finsent training run that sends heartbeats often enough
                ResourceSpecification({"prefect.resource.role": "flow", "prefect.resource.name": flow_name}),
                ResourceSpecification({"prefect.resource.role": "tag",
                                       "prefect.resource.id": f"prefect.tag.{HEARTBEAT_TAG}"})],
            for_each={"prefect.resource.id"}, posture=Posture.Proactive, threshold=1,
            within=timedelta(seconds=silence_seconds)),
        actions=[ChangeFlowRunState(state=StateType.CRASHED,
                                    message=f"no heartbeat for {silence_seconds} s: its worker or machine stopped "
                                            f"(finsent crash detection)")],
    ).create()
    return True
