"""Params for one run only: `finsent run -S train.epochs=2 -S peft.lora.r=16 --data tweets.csv`.

DVC's stages read params.yaml, so the overrides are written there for the run's life (as `dvc exp run -S`
does), which makes dvc.lock and the MLflow run record the params the model was really trained with. The
file's original text is kept in ``.finsent/params-before-run.json`` (naming the run) and written back when the
run ends, however it ends: normally by the run itself; after a SIGKILL by the killed run's stage process
(``run_guard.watch_parent_run``) within seconds, else by the next run before it starts. A finished run
leaves params.yaml byte for byte as it was.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

from finsent.errors import FinsentError

BACKUP = Path(".finsent") / "params-before-run.json"


def parse(assignments: list[str]) -> dict[str, object]:
    """``["train.epochs=2", ...]`` -> ``{"train.epochs": 2}``; values are YAML (2, 1e-4, true, [a, b], null)."""
    from ruamel.yaml import YAML

    parsed = {}
    for assignment in assignments:
        key, sep, text = assignment.partition("=")
        key = key.strip()
        if not sep or not key or any(not part for part in key.split(".")):
            raise FinsentError(f"-S {assignment}: expected section.key=value (e.g. -S train.epochs=2)")
        try:
            parsed[key] = YAML(typ="safe").load(text) if text.strip() else ""
        except Exception as exc:  # ruamel's parser errors have no common public base
            raise FinsentError(f"-S {assignment}: the value is not valid YAML ({str(exc).splitlines()[0]})") from None
    return parsed


def _apply(document, key: str, value) -> None:
    """Set ``key`` (dotted) in the ruamel document; only keys params.yaml already has (a typo is an error)."""
    node, parts = document, key.split(".")
    for depth, part in enumerate(parts):
        if not hasattr(node, "keys") or part not in node:
            where = ".".join(parts[:depth]) or "params.yaml"
            known = ", ".join(map(str, node.keys())) if hasattr(node, "keys") else "none (not a section)"
            raise FinsentError(f"-S {key}: params.yaml has no '{part}' in {where}; its keys: {known}")
        if depth == len(parts) - 1:
            node[part] = value
        else:
            node = node[part]


def _with_data_source(document, root: Path, data: str, data_format: str | None) -> None:
    source = Path(data).expanduser()
    if not source.exists():
        raise FinsentError(f"data source not found: {data}")
    resolved = source.resolve()
    document["data"]["sources"] = [str(resolved.relative_to(root)) if resolved.is_relative_to(root) else str(resolved)]
    document["data"]["format"] = data_format or "auto"


def restore_leftover(root: Path, only_run: int | None = None) -> bool:
    """Write back the params.yaml a killed run left overridden -> whether there was one. With ``only_run``,
    only that run's (a stage process cleaning up after its own run)."""
    backup = root / BACKUP
    try:
        saved = json.loads(backup.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if only_run is not None and saved.get("run_pid") != only_run:
        return False
    (root / "params.yaml").write_text(saved["text"], encoding="utf-8")
    backup.unlink(missing_ok=True)
    return True


@contextlib.contextmanager
def applied(root: Path, assignments: list[str], data: str | None = None, data_format: str | None = None):
    """params.yaml with ``assignments`` (and ``data`` as the only source) for the ``with`` block, checked
    as a whole (types, known keys) before anything runs; the original text comes back afterwards."""
    if not assignments and not data:
        yield
        return
    from ruamel.yaml import YAML

    from finsent.config import load_params

    params_file = root / "params.yaml"
    original = params_file.read_text(encoding="utf-8")
    yaml = YAML()
    document = yaml.load(original)
    for key, value in parse(assignments).items():
        _apply(document, key, value)
    if data:
        _with_data_source(document, root.resolve(), data, data_format)
    text = io.StringIO()
    yaml.dump(document, text)
    backup = root / BACKUP
    backup.parent.mkdir(parents=True, exist_ok=True)
    scratch = backup.with_suffix(".tmp")
    scratch.write_text(json.dumps({"run_pid": os.getpid(), "text": original}), encoding="utf-8")
    os.replace(scratch, backup)  # the original is safe on disk before params.yaml changes
    try:
        params_file.write_text(text.getvalue(), encoding="utf-8")
        try:
            load_params(params_file)  # a wrong type or value is one line now, not a failed stage later
        except FinsentError as exc:
            raise FinsentError(f"{exc} (with this run's -S / --data overrides)") from None
        yield
    finally:
        params_file.write_text(original, encoding="utf-8")
        backup.unlink(missing_ok=True)
