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
    import asyncio
    import os

    schedule = load_params(root / "params.yaml").schedule
    cron = schedule_of(schedule)
    os.environ["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] = str(HEARTBEAT_SECONDS)  # the runs it starts: HEARTBEAT_TAG
    ensure_crash_detection()
    print(f"finsent: serving deployment 'finsent-training/{schedule.deployment_name}' "
          f"(cron '{schedule.cron}' {schedule.timezone}; project {root}); Ctrl-C stops it and pauses the schedule",
          flush=True)
    asyncio.run(_serve_until_stopped(root, schedule, cron))


async def _serve_until_stopped(root: Path, schedule: ScheduleParams, cron) -> None:
    """Run Prefect's Runner until SIGINT / SIGTERM, then stop it through its own API (``astop``: in-flight runs
    cancelled, polling stopped, schedule paused on exit). Relying on asyncio's cancellation of the main task
    instead (what ``Flow.serve`` does on Ctrl-C) could leave the runner's task groups polling forever when the
    interrupt landed at an unlucky moment. A second signal exits at once."""
    import asyncio
    import os
    import signal

    from prefect.runner import Runner

    from pipelines.training import training_flow

    runner = Runner(name=f"finsent-{schedule.deployment_name}", pause_on_shutdown=True)
    await runner.aadd_flow(training_flow, name=schedule.deployment_name, schedules=[cron],
                           parameters={"project_dir": str(root)}, concurrency_limit=schedule.max_concurrent_runs,
                           tags=["finsent", "retraining", HEARTBEAT_TAG],
                           description="finsent scheduled retraining: stages, gate, register, promote, push "
                                       f"for the project in {root}")
    stop = asyncio.Event()

    def on_signal() -> None:
        if stop.is_set():
            os._exit(130)
        stop.set()

    loop = asyncio.get_running_loop()
    for number in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(number, on_signal)
    serving = asyncio.create_task(runner.start())
    stopping = asyncio.create_task(stop.wait())
    await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
    if not serving.done():
        print("finsent: stopping: cancelling runs in progress and pausing the schedule (Ctrl-C again quits at once)",
              flush=True)
        await runner.astop()
        await serving
    stopping.cancel()
    serving.result()
    print("finsent: stopped; the schedule is paused", flush=True)
