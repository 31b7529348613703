"""A DVC process killed while rewriting its stage-lock file leaves it empty; the next run resets it instead of
failing every stage with "Expecting value"."""

from __future__ import annotations

import json
import subprocess
import sys

from finsent.versioning import repair_stage_locks


def test_an_emptied_stage_lock_file_is_reset_and_a_valid_one_kept(tmp_path):
    subprocess.run([sys.executable, "-m", "dvc", "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    rwlock = tmp_path / ".dvc" / "tmp" / "rwlock"
    rwlock.parent.mkdir(parents=True, exist_ok=True)
    assert repair_stage_locks(tmp_path) is False  # no file: nothing to do
    rwlock.write_text("")  # what a SIGKILL between DVC's truncate and write leaves
    assert repair_stage_locks(tmp_path) is True
    assert json.loads(rwlock.read_text()) == {}
    held = {"read": {}, "write": {"data/x": {"pid": 1, "cmd": "dvc repro"}}}
    rwlock.write_text(json.dumps(held))
    assert repair_stage_locks(tmp_path) is False and json.loads(rwlock.read_text()) == held
