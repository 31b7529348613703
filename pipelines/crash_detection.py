"""Crash detection for served and worker runs: a run whose heartbeats stop is marked Crashed.

Used by the training flow (it creates the automation on first use) and by `finsent serve` (pipelines/deployment.py).
"""

from __future__ import annotations

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
