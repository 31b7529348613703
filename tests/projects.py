"""Scratch copies of the project for end-to-end tests: a git repo with the code, params and GX suites,
a slice of the sample data, and the `finsent` CLI run in it as a user would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import yaml

REPO = Path(__file__).resolve().parents[1]
COPY = ["src", "pipelines", "dvc.yaml", "params.yaml", ".dvc/config", ".dvc/.gitignore", ".gitignore", "data/pinned",
        "pyproject.toml", "gx"]
FINSENT = str(Path(sys.executable).parent / "finsent")
# absolute gates off for tiny test models (their quality and timings are noise); relative gates as shipped
GATES_OFF = {"min_macro_f1": 0.0, "min_accuracy": 0.0, "min_class_recall": 0.0, "max_ece": 1.0,
             "max_latency_ratio": None}


def embedded_env(**env: str) -> dict[str, str]:
    """This process's environment without MLflow / Prefect settings (a finsent process then uses the project's
    embedded stores), offline, with ``env`` on top."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PREFECT_"))}
    return {**clean, "HF_HUB_OFFLINE": "1", **env}


def finsent(project: Path, *args: str, timeout: float = 900, **env: str) -> subprocess.CompletedProcess:
    """Run the CLI in ``project`` with embedded defaults (no inherited MLflow / Prefect settings); ``timeout``
    only guards against a hang, so a run that trains the full sample gets a generous one."""
    return subprocess.run([FINSENT, *args], cwd=project, env=embedded_env(CI="true", **env), capture_output=True,
                          text=True, timeout=timeout)


def set_params(project: Path, **sections) -> None:
    params = yaml.safe_load((project / "params.yaml").read_text())
    for section, values in sections.items():
        params[section].update(values)
    (project / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def make_project(root: Path, rows_per_label: int, **sections) -> Path:
    """A git repo at ``root`` holding the project, data/slice.csv as the only source, and ``sections``
    merged into params.yaml."""
    for item in COPY:
        target = root / item
        target.parent.mkdir(parents=True, exist_ok=True)
        if (REPO / item).is_dir():
            shutil.copytree(REPO / item, target, ignore=shutil.ignore_patterns("uncommitted", "__pycache__"))
        else:
            shutil.copy(REPO / item, target)
    sample = pd.read_csv(REPO / "data" / "sample" / "financial_news.csv")
    sample.groupby("label", group_keys=False).head(rows_per_label).to_csv(root / "data" / "slice.csv", index=False)
    set_params(root, data={"sources": ["data/slice.csv"]}, **sections)
    for command in (["git", "init", "-q"], ["git", "add", "-A"],
                    ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "project"]):
        subprocess.run(command, cwd=root, check=True)
    return root
