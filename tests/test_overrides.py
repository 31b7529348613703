"""`finsent run -S section.key=value` / `--data`: params for one run only. The overrides are checked as a whole
before anything runs, recorded where the run's params are recorded (dvc.lock, MLflow), and params.yaml is the
same bytes afterwards, also when the run fails or is killed (tests/test_run_guard.py)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml

from finsent import overrides
from finsent.errors import FinsentError
from projects import GATES_OFF, REPO, finsent, make_project



@pytest.fixture()
def project(tmp_path) -> Path:
    return make_project(tmp_path / "project", 3)


def test_values_are_yaml_typed():
    assert overrides.parse(["train.epochs=2", "train.learning_rate=1e-4", "model.base=bundled",
                            "peft.lora.target_modules=[query, value]", "gate.max_latency_ratio=null"]) == {
        "train.epochs": 2, "train.learning_rate": 1e-4, "model.base": "bundled",
        "peft.lora.target_modules": ["query", "value"], "gate.max_latency_ratio": None}


@pytest.mark.parametrize("assignment, phrase", [
    ("epochs", "expected section.key=value"),
    ("train..epochs=2", "expected section.key=value"),
    ("train.nope=1", "params.yaml has no 'nope' in train; its keys: "),
    ("nosection.epochs=1", "params.yaml has no 'nosection' in params.yaml"),
    ("train.epochs.deeper=1", "has no 'deeper' in train.epochs; its keys: none (not a section)"),
    ("train.epochs=[1", "the value is not valid YAML"),
    ("train.epochs=eight", "train.epochs must be int"),
])
def test_a_wrong_override_is_refused_and_params_yaml_is_untouched(project, assignment, phrase):
    before = (project / "params.yaml").read_bytes()
    with pytest.raises(FinsentError, match=None) as refused:
        with overrides.applied(project, [assignment]):
            pytest.fail("the block must not run")
    assert phrase in str(refused.value), refused.value
    assert (project / "params.yaml").read_bytes() == before
    assert not (project / overrides.BACKUP).exists()


def test_applied_for_the_block_then_restored_byte_for_byte_even_on_error(project, tmp_path):
    (project / "params.yaml").write_text((REPO / "params.yaml").read_text())  # the shipped file, with its comments
    before = (project / "params.yaml").read_bytes()
    source = tmp_path / "other.csv"
    source.write_text("text,label\n")
    with pytest.raises(RuntimeError):
        with overrides.applied(project, ["train.epochs=7", "peft.lora.r=4"], data=str(source), data_format="csv"):
            during = yaml.safe_load((project / "params.yaml").read_text())
            assert during["train"]["epochs"] == 7 and during["peft"]["lora"]["r"] == 4
            assert during["data"]["sources"] == [str(source.resolve())] and during["data"]["format"] == "csv"
            assert "# " in (project / "params.yaml").read_text(), "comments are kept"
            saved = json.loads((project / overrides.BACKUP).read_text())
            assert saved["run_pid"] == os.getpid() and saved["text"].encode() == before
            raise RuntimeError("the run failed")
    assert (project / "params.yaml").read_bytes() == before
    assert not (project / overrides.BACKUP).exists()


def test_a_killed_runs_overrides_are_put_back_by_its_own_stage_or_the_next_run(project):
    before = (project / "params.yaml").read_text()
    (project / overrides.BACKUP).parent.mkdir(parents=True, exist_ok=True)
    (project / overrides.BACKUP).write_text(json.dumps({"run_pid": 4242, "text": before}))
    (project / "params.yaml").write_text(before.replace("epochs:", "epochs: 99 #", 1))
    assert not overrides.restore_leftover(project, only_run=4343), "another run's backup is not this stage's to use"
    assert overrides.restore_leftover(project, only_run=4242)
    assert (project / "params.yaml").read_text() == before and not (project / overrides.BACKUP).exists()
    assert not overrides.restore_leftover(project)


@pytest.mark.e2e
def test_a_run_with_overrides_records_them_and_leaves_params_yaml_as_it_was(tmp_path, tiny_base):
    project = make_project(tmp_path / "project", 20, model={"base": str(tiny_base), "max_length": 32},
                           train={"epochs": 3}, gate=GATES_OFF)
    # finsent() runs the CLI with the project's embedded stores (no MLflow / Prefect settings of earlier tests)
    result = finsent(project, "run", "-S", "train.epochs=1", "-S", "train.learning_rate=1e-3")
    assert result.returncode == 0, result.stdout + result.stderr
    assert subprocess.run(["git", "diff", "--exit-code"], cwd=project).returncode == 0, "tracked files unchanged"
    assert yaml.safe_load((project / "params.yaml").read_text())["train"]["epochs"] == 3
    lock = yaml.safe_load((project / "dvc.lock").read_text())
    recorded = lock["stages"]["train"]["params"]["params.yaml"]["train"]
    assert recorded["epochs"] == 1 and recorded["learning_rate"] == 1e-3
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{project / '.finsent' / 'mlflow.db'}")
    version = client.get_model_version_by_alias("finsent-sentiment", "champion")
    logged = client.get_run(version.run_id).data.params
    assert logged["train.epochs"] == "1" and float(logged["train.learning_rate"]) == 1e-3
