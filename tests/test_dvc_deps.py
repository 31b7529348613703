"""dvc.yaml names, for every stage, every finsent module the stage's code imports (transitively, lazy imports
included): a code change then re-runs the stages it can affect, and the DVC cache never hands back an output
that other code made."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
SRC = REPO / "src"
STAGE_MODULES = {  # the function each `finsent stage <name>` calls lives in
    "sources": "finsent.data.sources", "ingest": "finsent.data.ingest", "validate": "finsent.data.validate",
    "split": "finsent.data.split", "tokenize": "finsent.features", "train": "finsent.train.fit",
    "evaluate": "finsent.evaluate.metrics",
}


def _file(module: str) -> Path | None:
    base = SRC.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "finsent"}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "finsent":
            found.add(node.module)
            found |= {f"{node.module}.{alias.name}" for alias in node.names if _file(f"{node.module}.{alias.name}")}
    return found


def code_of(module: str) -> set[str]:
    """The source files (relative to the repo) of ``module`` and of everything it imports from finsent."""
    seen, pending = set(), [module]
    while pending:
        name = pending.pop()
        if name not in seen:
            seen.add(name)
            if _file(name):
                pending += _imports(_file(name))
    files = {_file(name) for name in seen if _file(name)}
    return {str(f.relative_to(REPO)) for f in files if f.name != "__init__.py"}


@pytest.mark.parametrize("stage", STAGE_MODULES)
def test_every_module_a_stage_runs_is_a_dependency(stage):
    declared = set(yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"][stage].get("deps", []))
    missing = sorted(code_of(STAGE_MODULES[stage]) - declared)
    assert not missing, f"dvc.yaml stage {stage} runs these but does not depend on them: {missing}"
