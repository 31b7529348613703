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
from pipelines.crash_detection import HEARTBEAT_SECONDS, HEARTBEAT_TAG, ensure_crash_detection  # noqa: F401


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
