"""One `finsent run` per project at a time, and nothing of a killed run left running.

A run holds an exclusive ``flock`` on ``.finsent/run.lock`` for its whole life (the kernel drops it when the
process dies, however it dies) and records its pid there; a second run is refused at once, naming the holder.
Every process a run starts inherits ``FINSENT_RUN_PID`` and ``FINSENT_PROJECT``. When a run is SIGKILLed, what
it started is found by those variables: a ``finsent stage`` process notices within seconds that its run is
gone, puts back params.yaml if the run had overridden it, and stops itself (``watch_parent_run``); a run's
stages run inside it, so a run with -S / --data overrides also starts a small process that only waits to put
params.yaml back should the run be killed (``restore_params_when_killed``); anything else (the ephemeral
Prefect API server) is stopped by the next run before it starts (``stop_leftovers``).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

from finsent.errors import FinsentError
from finsent.overrides import BACKUP, restore_leftover

RUN_PID = "FINSENT_RUN_PID"
PROJECT = "FINSENT_PROJECT"
POLL_SECONDS = 2.0


def _alive(pid: int) -> bool:
    """Running (a zombie, killed but not yet reaped by its parent, is not)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, another user's
        return True
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return True
    return state not in ("Z", "X")


def _environ(pid: int) -> dict[str, str]:
    try:
        raw = Path(f"/proc/{pid}/environ").read_bytes()
    except OSError:
        return {}
    pairs = (entry.split(b"=", 1) for entry in raw.split(b"\0") if b"=" in entry)
    return {key.decode(errors="replace"): value.decode(errors="replace") for key, value in pairs}


def leftovers(project: Path) -> list[tuple[int, int]]:
    """(pid, pid of the run that started it) of every process started by a run of ``project`` that is gone."""
    found = []
    for entry in os.listdir("/proc") if Path("/proc").is_dir() else []:
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        environ = _environ(int(entry))
        run = environ.get(RUN_PID, "")
        if environ.get(PROJECT) == str(project) and run.isdigit() and not _alive(int(run)):
            found.append((int(entry), int(run)))
    return found


def stop_leftovers(project: Path, grace_seconds: float = 5.0) -> list[tuple[int, int]]:
    """SIGTERM, then SIGKILL after ``grace_seconds``, every leftover of a killed run -> what was stopped."""
    found = leftovers(project)
    for pid, _ in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace_seconds
    while time.monotonic() < deadline and any(_alive(pid) for pid, _ in found):
        time.sleep(0.2)
    for pid, _ in found:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return found


@contextlib.contextmanager
def exclusive_run(project: Path, command: str):
    """Hold the project's run lock (refusing at once when another run holds it), stop what a killed run left
    behind, and mark every process started from here as this run's."""
    project = Path(project).resolve()
    lock_path = project / ".finsent" / "run.lock"
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    handle = lock_path.open("a+")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.seek(0)
        try:
            holder = json.loads(handle.read() or "{}")
        except ValueError:
            holder = {}
        handle.close()
        raise FinsentError(f"another run is in progress in {project} (pid {holder.get('pid', '?')}, "
                           f"`{holder.get('command', 'finsent run')}`, since {holder.get('started', '?')}); "
                           f"wait for it, or stop it (kill {holder.get('pid', '<pid>')}) and run again") from None
    try:
        stopped = stop_leftovers(project)
        if stopped:
            runs = ", ".join(sorted({str(run) for _, run in stopped}))
            print(f"finsent: stopped {len(stopped)} process(es) left behind by an interrupted run (pid {runs})",
                  flush=True)
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps({"pid": os.getpid(), "command": command,
                                 "started": datetime.now(timezone.utc).isoformat(timespec="seconds")}))
        handle.flush()
        saved = {name: os.environ.get(name) for name in (RUN_PID, PROJECT)}
        os.environ[RUN_PID], os.environ[PROJECT] = str(os.getpid()), str(project)
        try:
            yield
        finally:
            for name, value in saved.items():
                if value is None:
                    os.environ.pop(name, None)
                else:
                    os.environ[name] = value
    finally:
        handle.close()  # releases the flock


def watch_parent_run(what: str) -> None:
    """In a process a run started: stop this process soon after that run is gone (killed), so that a stage
    does not go on writing outputs nobody waits for. No-op outside a run."""
    run = os.environ.get(RUN_PID, "")
    if not run.isdigit() or int(run) == os.getpid():
        return

    def watch() -> None:
        while _alive(int(run)):
            time.sleep(POLL_SECONDS)
        print(f"finsent: {what}: its run (pid {run}) is gone; stopping", flush=True)
        project = os.environ.get(PROJECT)
        if project:  # the killed run cannot put its -S / --data overrides back itself
            with contextlib.suppress(OSError):
                restore_leftover(Path(project), only_run=int(run))
        os._exit(137)

    threading.Thread(target=watch, name="finsent-run-watch", daemon=True).start()


def restore_params_when_killed(project: Path) -> None:
    """While this run's -S / --data overrides are in params.yaml: a process (its own session, so a Ctrl-C of
    the run does not reach it) that waits for this run to end and puts back the file should the run have been
    killed before doing it itself. No-op without overrides."""
    if not (Path(project) / BACKUP).is_file():
        return
    subprocess.Popen([sys.executable, "-m", "finsent.run_guard", str(os.getpid()), str(project)],
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     start_new_session=True)


def _restore_after(run: int, project: Path) -> None:
    while _alive(run):
        time.sleep(POLL_SECONDS)
    restore_leftover(project, only_run=run)  # nothing to do when the run put the file back itself


if __name__ == "__main__":  # restore_params_when_killed's process: RUN_PID PROJECT
    _restore_after(int(sys.argv[1]), Path(sys.argv[2]))
