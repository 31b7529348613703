"""dvc.yaml is generated from the stage table and names, for every stage, every finsent module the stage's call
imports (transitively, lazy imports included) and the versions of the libraries it runs: a code change or an
upgrade then re-runs the stages it can affect, and the DVC cache never hands back an output other code made."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from finsent import stages

REPO = Path(__file__).resolve().parents[1]


def test_committed_dvc_yaml_is_the_generated_one():
    assert (REPO / "dvc.yaml").read_text() == stages.dvc_yaml(), "dvc.yaml is stale: run `finsent dvc-yaml`"


def test_code_reached_only_through_other_modules_is_a_dependency():
    deps = {name: set(entry.get("deps", [])) for name, entry in yaml.safe_load(stages.dvc_yaml())["stages"].items()}
    # validate -> data/validate.py -> drift.py, gx_project.py, ingest.py; train -> fit.py -> features.py, bundle.py
    assert {"src/finsent/data/drift.py", "src/finsent/data/gx_project.py", "src/finsent/data/ingest.py",
            "src/finsent/config.py", "src/finsent/stages.py"} <= deps["validate"]
    assert {"src/finsent/features.py", "src/finsent/base_model.py", "src/finsent/bundle.py",
            "src/finsent/train/methods.py", "src/finsent/train/checkpoint.py"} <= deps["train"]
    assert {"src/finsent/bundle.py", "src/finsent/evaluate/calibration.py"} <= deps["evaluate"]
    assert "src/finsent/train/fit.py" not in deps["validate"]  # a training change does not re-validate the data
    for name, files in deps.items():
        assert all((REPO / f).exists() for f in files if f.startswith("src/")), name


def test_every_stage_after_the_data_depends_on_the_versions_of_its_libraries(tmp_path):
    written = stages.write_library_versions(tmp_path)
    train = json.loads((tmp_path / "train.json").read_text())
    assert {"python", "torch", "transformers", "peft", "tokenizers"} <= set(train)
    assert "great_expectations" in json.loads((tmp_path / "validate.json").read_text())
    for name in written:
        assert stages.stage(name).libraries_file() in yaml.safe_load(stages.dvc_yaml())["stages"][name]["deps"]


def test_downstream_follows_the_declared_paths():
    assert stages.downstream("validate") == ["validate", "split", "tokenize", "train", "evaluate", "onnx"]
    assert stages.downstream("train") == ["train", "evaluate", "onnx"]
    assert stages.downstream("libraries") == ["libraries", "ingest", "validate", "split", "tokenize", "train",
                                              "evaluate", "onnx"]
