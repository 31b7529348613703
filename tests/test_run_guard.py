"""A run SIGKILLed mid-training: a second run meanwhile is refused at once naming the holder; after the kill
the run's watcher puts back params.yaml (the run's -S override) and stops, the rerun stops what is left (the
ephemeral Prefect API server) and runs; afterwards no process of the killed run is alive."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from projects import GATES_OFF, make_project

pytestmark = pytest.mark.e2e
FINSENT = str(Path(sys.executable).with_name("finsent"))


def _processes_of_run(run_pid: int) -> list[str]:
    from finsent.run_guard import _alive, _environ

    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and _environ(int(entry)).get("FINSENT_RUN_PID") == str(run_pid) and _alive(int(entry)):
            try:
                found.append(Path(f"/proc/{entry}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:120])
            except OSError:
                continue
    return found


def _wait_for(predicate, timeout: float, what: str, process: subprocess.Popen | None = None,
              log: Path | None = None) -> None:
    """Poll ``predicate``; fail at once (with its log) when ``process`` ended before it came true."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if process is not None and process.poll() is not None:
            raise AssertionError(f"the run ended (exit {process.returncode}) before {what}:\n"
                                 + (log.read_text()[-3000:] if log else ""))
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout:.0f} s: {what}")


def test_a_killed_run_leaves_nothing_running_and_blocks_nothing(tmp_path, tiny_base):
    project = make_project(tmp_path / "project", 20, model={"base": str(tiny_base), "max_length": 32},
                           train={"epochs": 2, "early_stopping_patience": 0}, gate=GATES_OFF)
    params_before = (project / "params.yaml").read_bytes()
    log = tmp_path / "first.log"
    first = subprocess.Popen([FINSENT, "run", "-S", "train.epochs=400"], cwd=project, stdout=log.open("w"),
                             stderr=subprocess.STDOUT)
    try:
        _wait_for(lambda: "tokenize  done" in log.read_text(), 600, "the first run reaching training", first, log)
        time.sleep(2)
        second = subprocess.run([FINSENT, "run"], cwd=project, capture_output=True, text=True, timeout=600)
        assert second.returncode == 2, second.stdout + second.stderr
        assert "sources" not in second.stdout, "refused before any stage ran"
        assert second.stderr.count("\n") == 1 and f"another run is in progress in {project} (pid {first.pid}" \
            in second.stderr, second.stderr
        assert (project / "params.yaml").read_bytes() != params_before, "the -S override is in params.yaml"
        assert any("finsent.run_guard" in c for c in _processes_of_run(first.pid)), _processes_of_run(first.pid)
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait()
    _wait_for(lambda: not any("finsent.run_guard" in c for c in _processes_of_run(first.pid)), 180,
              "the killed run's watcher putting back params.yaml and stopping")
    assert (project / "params.yaml").read_bytes() == params_before, "the killed run's -S override was put back"

    rerun = subprocess.run([FINSENT, "run"], cwd=project, capture_output=True, text=True, timeout=900)
    assert "Traceback" not in rerun.stdout + rerun.stderr
    leftover = [c for c in _processes_of_run(first.pid)]
    assert leftover == [], leftover
    assert rerun.returncode in (0, 1), rerun.stdout[-2000:] + rerun.stderr[-2000:]
    # the killed run's ephemeral Prefect API server cannot watch its run: the rerun stopped it
    assert f"left behind by an interrupted run (pid {first.pid})" in rerun.stdout.splitlines()[0], rerun.stdout
    assert "train     done" in rerun.stdout
