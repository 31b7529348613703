"""DVC and git, seen from the pipeline: judge and reproduce stages, push outputs, read provenance.

DVC runs in-process (its Python API) so the flow can tell "ran" from "unchanged, skipped"
and report a stage's own one-line error instead of DVC's generic failure.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Iterator

import yaml

REMOTE_URL_ENV = "FINSENT_DVC_REMOTE_URL"  # a shared DVC remote (s3://bucket/path, ...) instead of .dvc/config's
REMOTE_ENDPOINT_ENV = "AWS_ENDPOINT_URL"  # an S3-compatible store (MinIO, ...) rather than AWS itself
ENV_REMOTE = "env"  # the name that remote gets in DVC's config for this process


def open_repo(root: Path):
    """DVC's Repo at ``root``; with FINSENT_DVC_REMOTE_URL set, that URL is its default remote (credentials stay
    in the environment -- AWS_ACCESS_KEY_ID, ... -- where DVC's S3 client reads them; nothing is written)."""
    from dvc.repo import Repo

    url = os.environ.get(REMOTE_URL_ENV)
    if not url:
        return Repo(str(root))
    remote = {"url": url}
    if os.environ.get(REMOTE_ENDPOINT_ENV) and url.startswith("s3://"):
        remote["endpointurl"] = os.environ[REMOTE_ENDPOINT_ENV]
    return Repo(str(root), config={"core": {"remote": ENV_REMOTE}, "remote": {ENV_REMOTE: remote}})


def repair_stage_locks(root: Path) -> bool:
    """DVC rewrites .dvc/tmp/rwlock in place (truncate, then write): a DVC process killed in between (a SIGKILLed
    worker) leaves it empty or cut, and every later stage then fails with "Expecting value". Under DVC's own
    guard lock, a file that is not JSON holds no live entry and is reset to empty locks. -> whether it was."""
    import json

    from dvc.lock import make_lock

    tmp = root / ".dvc" / "tmp"
    path = tmp / "rwlock"
    if not path.is_file():
        return False
    with make_lock(str(tmp / "rwlock.lock"), tmp_dir=str(tmp), wait=True):
        try:
            json.loads(path.read_text(encoding="utf-8"))
            return False
        except ValueError:
            path.write_text("{}", encoding="utf-8")
    print(f"  note: {path.relative_to(root)} was left unreadable by a killed DVC process; reset", flush=True)
    return True


@contextlib.contextmanager
def stage_commands_in_process(call_cli: Callable[[list[str]], int]) -> Iterator[None]:
    """While open, DVC runs a ``finsent stage ...`` command of dvc.yaml as ``call_cli(argv)`` in this process
    (in the stage's folder) rather than as a new process that imports torch, transformers and GX again.

    Only the command's process changes: DVC still decides what is stale, restores from its run cache, removes
    and hashes the outputs and writes dvc.lock, so `dvc repro` and this path record the same lock. DVC has no
    hook for this; its one function that starts a command's process (pinned DVC) is swapped while open."""
    from dvc.stage import run as dvc_stage_run
    from dvc.stage.exceptions import StageCmdFailedError

    from finsent.stages import STAGE_COMMAND

    start_process = dvc_stage_run._run

    def run(executable, cmd, **kwargs):
        if not cmd.startswith(f"{STAGE_COMMAND} "):  # a stage someone added by hand: as DVC runs it
            return start_process(executable, cmd, **kwargs)
        with contextlib.chdir(kwargs.get("cwd") or os.getcwd()):
            try:
                code = call_cli(shlex.split(cmd)[1:])
            except SystemExit as exc:  # an argparse usage error
                code = exc.code if isinstance(exc.code, int) else 2
        if code:
            raise StageCmdFailedError(cmd, code)

    dvc_stage_run._run = run
    try:
        yield
    finally:
        dvc_stage_run._run = start_process


def reproduce_stage(root: Path, stage: str, call_cli: Callable[[list[str]], int] | None = None) -> dict:
    """Run ``stage`` if its deps, params or code changed. -> {stage, ran, error}.

    With ``call_cli`` (the ``finsent`` CLI's entry point), the stage's command runs in this process
    (``stage_commands_in_process``); without it, in its own process, as `dvc repro` runs it."""
    from dvc.exceptions import DvcException

    from finsent.errors import ERROR_FILE_ENV

    logging.getLogger("dvc").setLevel(logging.ERROR)  # DVC's hints ("git add dvc.lock") are not for this user
    # dvc.yaml calls `finsent stage ...`: make it this very installation's CLI, activated venv or not.
    scripts = str(Path(sys.executable).parent)
    if scripts not in os.environ.get("PATH", "").split(os.pathsep):
        os.environ["PATH"] = scripts + os.pathsep + os.environ.get("PATH", "")

    with tempfile.NamedTemporaryFile("r", suffix=".err", delete=False) as handle:
        error_file = Path(handle.name)
    os.environ[ERROR_FILE_ENV] = str(error_file)
    try:
        repair_stage_locks(root)
        in_process = stage_commands_in_process(call_cli) if call_cli else contextlib.nullcontext()
        with open_repo(root) as repo, in_process:
            ran = repo.reproduce(stage, single_item=True)
        return {"stage": stage, "ran": bool(ran), "error": None}
    except DvcException as exc:
        message = error_file.read_text().strip() or _root_cause(exc)
        return {"stage": stage, "ran": True, "error": message}
    finally:
        os.environ.pop(ERROR_FILE_ENV, None)
        error_file.unlink(missing_ok=True)


def unchanged_stages(root: Path) -> frozenset[str]:
    """The stages of dvc.yaml that DVC would skip now (deps, params, code and outputs as dvc.lock records them),
    judged in one status pass: dvc.yaml, dvc.lock and params.yaml are read once for all stages, where
    reproducing each stage in turn reads them again per stage. -> their names; none when DVC cannot tell
    (a broken dvc.yaml, ...): reproducing the stage then reports why."""
    from dvc.exceptions import DvcException

    logging.getLogger("dvc").setLevel(logging.ERROR)
    try:
        repair_stage_locks(root)
        with open_repo(root) as repo:
            changed = repo.status()  # keyed by address: the stage's name, its dvc.yaml's path first outside cwd
            return frozenset(stage.name for stage in repo.index.stages if stage.addressing not in changed)
    except DvcException:
        return frozenset()


def _root_cause(exc: BaseException) -> str:
    while exc.__cause__ is not None:
        exc = exc.__cause__
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def push(root: Path) -> int:
    """Send every cached output to the default DVC remote; -> number of files transferred."""
    with open_repo(root) as repo:
        return int(repo.push())


def lock_text(root: Path) -> str:
    path = root / "dvc.lock"
    return path.read_text() if path.is_file() else ""


def out_md5(root: Path, stage: str, out: str) -> str | None:
    """The md5 DVC recorded for one output of a stage (a directory's ends in '.dir')."""
    lock = yaml.safe_load(lock_text(root) or "{}") or {}
    for entry in lock.get("stages", {}).get(stage, {}).get("outs", []):
        if entry.get("path") == out:
            return entry.get("md5")
    return None


def code_revision(root: Path) -> dict:
    """The git commit the code came from, and whether the working tree differed from it."""
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=root, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "HEAD")
    except (subprocess.CalledProcessError, FileNotFoundError):
        return {"commit": None, "dirty": None, "why": "not a git checkout with commits"}
    dirty = bool(git("status", "--porcelain", "--untracked-files=no", "--", "src", "pipelines", "dvc.yaml"))
    return {"commit": commit, "dirty": dirty}
