"""Sources stage: which files feed this run, and their content hashes (``sources.json``).

A source is a file or a drop folder (every non-hidden file below it is a source). Files are
identified by the sha256 of their bytes: a file whose content is already listed (the same batch
dropped twice under two names) is listed as a duplicate and not ingested twice. The manifest is
what DVC watches for the ingest stage (this stage always runs; it only reads and hashes), and
what lineage records as the raw inputs of a run.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path

from finsent.config import DataParams, SourceSpec
from finsent.errors import FinsentError


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _resolve(path: Path) -> Path:
    try:
        return path.resolve(strict=True)
    except RuntimeError as exc:  # Python 3.11 reports a symlink loop this way
        raise FinsentError(f"{path}: symlink loop; point it at a real file") from exc
    except FileNotFoundError as exc:
        hint = " (a dangling symlink)" if path.is_symlink() else ""
        raise FinsentError(f"data source not found: {path}{hint}") from exc
    except OSError as exc:  # ELOOP on some platforms, permission errors
        raise FinsentError(f"{path}: cannot be opened ({exc.strerror}){'; symlink loop' if exc.errno == 40 else ''}")


def _folder_files(folder: Path) -> list[tuple[Path, str]]:
    """Every non-hidden file below ``folder`` (sorted), each named by its path inside the folder.

    A file that resolves outside the folder (a symlink, a '..' name) is refused: a drop folder
    must not be a way to read arbitrary files of the machine."""
    real_folder = _resolve(folder)
    found = []
    for current, folders, files in os.walk(folder, followlinks=False):
        folders[:] = sorted(f for f in folders if not f.startswith("."))
        for name in sorted(files):
            if name.startswith("."):
                continue
            path = Path(current) / name
            real = _resolve(path)
            if not real.is_relative_to(real_folder):
                raise FinsentError(f"{path}: resolves outside the drop folder {folder} (to {real}); "
                                   f"copy the file into the folder instead of linking it")
            if real.is_file():
                found.append((path, path.relative_to(folder).as_posix()))
    if not found:
        raise FinsentError(f"drop folder {folder} holds no data files (hidden files are skipped)")
    return found


def source_files(spec: SourceSpec) -> list[tuple[Path, str]]:
    """(path, source name) for each file the entry stands for; the name is what rows carry as ``source``."""
    path = Path(spec.path).expanduser()
    real = _resolve(path)
    if real.is_dir():
        return [(file, f"{path.name}/{name}") for file, name in _folder_files(path)]
    if not real.is_file():
        raise FinsentError(f"{path}: not a regular file or folder")
    if real.stat().st_size == 0:
        raise FinsentError(f"{path}: file is empty")
    return [(path, path.name)]


def manifest(params: DataParams) -> dict:
    """Every source file with its hash and the settings it is read with; duplicates by content marked."""
    entries, seen = [], {}
    for spec in params.source_specs():
        settings = {k: v for k, v in dataclasses.asdict(spec).items() if k != "path"}
        for path, name in source_files(spec):
            if path.stat().st_size == 0:
                raise FinsentError(f"{path}: file is empty")
            digest = sha256_file(path)
            entries.append({"source": name, "path": str(path), "sha256": digest, "bytes": path.stat().st_size,
                            "settings": settings, "duplicate_of": seen.get(digest)})
            seen.setdefault(digest, name)
    names = [e["source"] for e in entries]
    clashes = sorted({n for n in names if names.count(n) > 1})
    if clashes:
        raise FinsentError(f"two sources share the name(s) {', '.join(clashes)}; rows could not be traced back "
                           f"to their file, rename one")
    return {"files": entries}


def write_manifest(params: DataParams, out: Path) -> dict:
    result = manifest(params)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


def read_manifest(path: Path) -> list[dict]:
    if not path.is_file():
        raise FinsentError(f"source manifest not found: {path} (run the 'sources' stage first)")
    return json.loads(path.read_text())["files"]


def spec_of(entry: dict) -> SourceSpec:
    return SourceSpec(path=entry["path"], **entry["settings"])
