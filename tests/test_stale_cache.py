"""DVC never hands back an output that other code or other libraries made: a scratch project is reproduced once,
then a module a stage reaches only indirectly is edited, or a library the training runs is "upgraded", and
exactly the stages that can be affected re-run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from projects import embedded_env, make_project

from finsent.stages import JUDGED_TOGETHER, NAMES, stage
from finsent.versioning import unchanged_stages

DVC = str(Path(sys.executable).parent / "dvc")


def _repro(project: Path, **env: str) -> dict[str, bool]:
    """`dvc repro` in ``project`` -> {stage: ran}."""
    clean = embedded_env(PATH=f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}", **env)
    done = subprocess.run([DVC, "repro"], cwd=project, env=clean, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    ran = {name: True for name in re.findall(r"Running stage '([\w-]+)'", done.stdout)}
    ran |= {name: False for name in re.findall(r"Stage '([\w-]+)' didn't change, skipping", done.stdout)}
    return ran


def _status(project: Path) -> dict:
    done = subprocess.run([DVC, "status", "--json"], cwd=project, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout or "{}")


def _tiny_project(root: Path, tiny_base: Path) -> Path:
    return make_project(root, 12, model={"base": str(tiny_base), "max_length": 32},
                        train={"epochs": 1, "batch_size": 8})


@pytest.fixture(scope="module")
def reproduced(tmp_path_factory, tiny_base) -> Path:
    project = _tiny_project(tmp_path_factory.mktemp("stale") / "project", tiny_base)
    first = _repro(project)
    assert all(first.values()) and len(first) == 9, first
    return project


@pytest.fixture
def project(reproduced, tmp_path) -> Path:
    copy = tmp_path / "project"
    shutil.copytree(reproduced, copy, symlinks=True)
    return copy


IN_PROCESS = """
import json, sys
from pathlib import Path
from finsent import stages
from finsent.cli import main
from finsent.versioning import reproduce_stage
outcomes = [reproduce_stage(Path.cwd(), name, main) for name in stages.NAMES]
print(json.dumps({"outcomes": outcomes, "trained_here": "finsent.train.fit" in sys.modules}))
"""


# outputs that record when or how fast they were made (which files were new to the ingest ledger, GX run times,
# training and scoring speed): their bytes differ between any two runs, however run
CLOCK_OUTPUTS = {"reports/ingest.json", "reports/validation.json", "reports/data_docs", "reports/train.json",
                 "reports/eval"}


def _lock(project: Path) -> dict:
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    for entry in lock["stages"].values():
        for out in entry.get("outs", []):
            if out["path"] in CLOCK_OUTPUTS:
                out.pop("md5"), out.pop("size"), out.pop("nfiles", None)
    return lock


def test_the_flows_in_process_stages_record_the_same_dvc_lock_as_dvc_repro(reproduced, tmp_path):
    """The flow runs each stage's command in its own process (torch imported once); DVC still judges, hashes and
    locks, so the lock equals the one `dvc repro` (a process per stage) wrote for the same project: the same
    deps, params and code, and the same bytes out (the adapter's included)."""
    project = tmp_path / "in_process"
    shutil.copytree(reproduced, project, symlinks=True)  # .finsent/ingest-ledger.json too: same ingested_at
    (project / "dvc.lock").unlink()
    shutil.rmtree(project / ".dvc" / "cache")  # DVC's run cache would hand the outputs back without running
    for name in NAMES:
        for output in stage(name).outputs.values():
            (shutil.rmtree if (project / output).is_dir() else Path.unlink)(project / output)
    done = subprocess.run([sys.executable, "-c", IN_PROCESS], cwd=project, env=embedded_env(),
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert [(o["stage"], o["ran"], o["error"]) for o in result["outcomes"]] == [(n, True, None) for n in NAMES]
    assert result["trained_here"]  # the train stage's function ran in the calling process
    assert _lock(project) == _lock(reproduced)


def test_the_flows_one_status_pass_names_the_stages_dvc_would_skip(project):
    """The flow skips, without reproducing them, the stages one DVC status pass calls unchanged: after the
    always-changed stages, all of them on an unchanged project; every one but validate after an edit that
    only validate reaches; none where dvc.yaml cannot be read (each stage's own run then says why)."""
    assert unchanged_stages(project) == set(JUDGED_TOGETHER)
    drift = project / "src" / "finsent" / "data" / "drift.py"
    drift.write_text(drift.read_text() + "\n# an edit\n")
    assert unchanged_stages(project) == set(JUDGED_TOGETHER) - {"validate"}
    (project / "dvc.yaml").write_text("stages: [not a mapping\n")
    assert unchanged_stages(project) == frozenset()


def test_editing_a_module_validate_reaches_only_indirectly_reruns_validate(project):
    drift = project / "src" / "finsent" / "data" / "drift.py"  # validate.py imports it; no other stage does
    drift.write_text(drift.read_text() + "\n# an edit\n")
    changed = {name for name in _status(project) if not name.startswith(("libraries", "sources"))}
    assert changed == {"validate"}, changed
    ran = _repro(project)
    assert ran["validate"] and not ran["ingest"], ran
    # what validate re-made is byte-identical, so the stages after it are (rightly) served from the cache
    assert not any(ran[name] for name in ("split", "tokenize", "train", "evaluate")), ran
    assert "src/finsent/data/drift.py" in (project / "dvc.lock").read_text()


def test_upgrading_a_library_the_training_runs_reruns_train_and_evaluate_only(project, tmp_path):
    from importlib import metadata

    shadow = tmp_path / "site"  # a distribution of another version found first: what an upgrade looks like
    info = shadow / "peft-99.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: peft\nVersion: 99.0\n")
    assert metadata.version("peft") != "99.0"
    ran = _repro(project, PYTHONPATH=str(shadow))
    assert ran["libraries"], ran
    assert json.loads((project / "data/interim/libraries/train.json").read_text())["peft"] == "99.0"
    assert ran["train"] and ran["evaluate"], ran
    assert not any(ran[name] for name in ("ingest", "validate", "split", "tokenize")), ran
