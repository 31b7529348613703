"""Lineage audit end to end: a flow run in one directory (tiny base model, small data), then the
chain, `lineage verify` and `reproduce` from a fresh clone in another directory that only has access
to the run's MLflow store and DVC remote; finally a byte flipped in the remote is caught."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from projects import GATES_OFF, finsent, make_project

pytestmark = pytest.mark.e2e
DVC = str(Path(sys.executable).parent / "dvc")


@pytest.fixture(scope="module")
def made(tmp_path_factory, tiny_base) -> Path:
    project = make_project(tmp_path_factory.mktemp("made") / "project", 20,
                           model={"base": str(tiny_base), "max_length": 32}, train={"epochs": 2},
                           gate=GATES_OFF)
    run = finsent(project, "run")
    assert run.returncode == 0, run.stdout + run.stderr
    return project


@pytest.fixture(scope="module")
def clone(made, tmp_path_factory) -> tuple[Path, dict]:
    """A fresh clone of the project repo: no outputs, no DVC cache, no MLflow store of its own."""
    folder = tmp_path_factory.mktemp("audit") / "clone"
    subprocess.run(["git", "clone", "-q", str(made), str(folder)], check=True)
    subprocess.run([DVC, "remote", "modify", "--local", "local", "url", str(made / ".finsent" / "dvc-remote")],
                   cwd=folder, check=True)
    return folder, {"MLFLOW_TRACKING_URI": f"sqlite:///{made / '.finsent' / 'mlflow.db'}"}


def test_chain_names_every_link(made):
    text = finsent(made, "lineage", "finsent-sentiment@champion")
    assert text.returncode == 0, text.stderr
    for line in ("finsent-sentiment v1 [champion]", "validation  GX success True", "Data Docs: runs:/",
                 "decisions   1 recorded", "champion: - -> v1", "raw inputs  1 file(s)", "slice.csv  sha256 "):
        assert line in text.stdout, line
    chain = json.loads(finsent(made, "lineage", "finsent-sentiment/1", "--json").stdout)
    assert not [k for k, v in chain.items() if isinstance(v, dict) and "missing" in v]
    assert chain["code"]["commit"] and chain["code"]["dirty"] is False
    assert chain["params"]["model"]["max_length"] == 32
    assert {o["path"] for o in chain["dvc_lock"]["outs"]} >= {"data/interim/ingested.parquet", "models/adapter",
                                                              "data/processed/split", "reports/validation.json"}
    assert chain["base_model"]["weights_sha256"] and chain["validation"]["accounting"]["rows_read"] == 60


def test_unknown_reference_is_one_clear_line(made):
    result = finsent(made, "lineage", "finsent-sentiment/99")
    assert result.returncode == 2 and "finsent-sentiment/99: not in the registry" in result.stderr


def test_verify_and_reproduce_from_a_fresh_clone(clone):
    folder, env = clone
    verified = finsent(folder, "lineage", "verify", "finsent-sentiment@champion", **env)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.rstrip().endswith("0 mismatch, 0 missing"), verified.stdout
    assert "remote ok" in verified.stdout and "cache ok" not in verified.stdout  # the clone has no cache
    reproduced = finsent(folder, "reproduce", "finsent-sentiment/1", **env)
    assert reproduced.returncode == 0, reproduced.stdout + reproduced.stderr
    assert "verdict: identical" in reproduced.stdout
    assert "validate  output identical" in reproduced.stdout and "split     output identical" in reproduced.stdout


def test_a_flipped_byte_in_the_remote_is_exactly_one_mismatch(made, clone):
    folder, env = clone
    lock = yaml.safe_load((made / "dvc.lock").read_text())
    adapter = next(o for o in lock["stages"]["train"]["outs"] if o["path"] == "models/adapter")["md5"]
    remote = made / ".finsent" / "dvc-remote" / "files" / "md5"
    listing = json.loads((remote / adapter[:2] / adapter[2:]).read_text())
    weights = next(e["md5"] for e in listing if e["relpath"] == "adapter_model.safetensors")
    stored = remote / weights[:2] / weights[2:]
    data = bytearray(stored.read_bytes())
    data[len(data) // 2] ^= 0x01
    stored.chmod(0o644)
    stored.write_bytes(bytes(data))

    verified = finsent(folder, "lineage", "verify", "finsent-sentiment/1", **env)
    assert verified.returncode == 1, verified.stdout + verified.stderr
    mismatches = [line for line in verified.stdout.splitlines() if line.startswith("MISMATCH")]
    assert len(mismatches) == 1 and "train: models/adapter" in mismatches[0], verified.stdout
    assert "adapter_model.safetensors differ" in mismatches[0]
    assert "1 artifact(s) do not match their recorded hash: train: models/adapter" in verified.stderr


def test_a_changed_file_in_the_mlflow_store_is_refused_and_reported(made, clone):
    folder, env = clone
    stored = [p for p in (made / ".finsent" / "mlartifacts").rglob("finsent_model.json") if "data" in p.parts]
    assert len(stored) == 1, stored
    meta = json.loads(stored[0].read_text())
    stored[0].write_text(json.dumps({**meta, "max_length": 4}))  # a "harmless" edit: still refused

    predicted = finsent(folder, "predict", "--model", "models:/finsent-sentiment/1", "Profit rose", **env)
    assert predicted.returncode == 1 and predicted.stdout == ""
    assert predicted.stderr.count("\n") == 1 and "Traceback" not in predicted.stderr
    assert "refusing to load finsent-sentiment v1: data/adapter/finsent_model.json changed" in predicted.stderr
    verified = finsent(folder, "lineage", "verify", "finsent-sentiment/1", **env)
    assert verified.returncode == 1
    seal = next(line for line in verified.stdout.splitlines() if "registered model files vs their seal" in line)
    assert seal.startswith("MISMATCH") and "data/adapter/finsent_model.json changed" in seal
    bundle = next(line for line in verified.stdout.splitlines() if "registered model bundle vs dvc.lock" in line)
    assert bundle.startswith("MISMATCH") and "finsent_model.json differ" in bundle
