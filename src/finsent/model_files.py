"""The files of a registered model version: sealed at registration, checked before every load.

At registration finsent records the sha256 of every file of the version (MLmodel, environment files, the
adapter bundle) in the version's tag ``finsent.files_sha256``. The tag lives in the tracking store, apart from
the artifact store, so a file changed, added or removed in the artifact store after registration is found.
Every finsent load (``predict``, the monitor, the comparison with the champion, ``lineage verify``) downloads
the version and checks every file against the tag before MLflow reads the MLmodel or any weight: a model that
does not match is refused with one line naming the file, and nothing of it is imported or deserialised.

The stored model holds no code: its MLmodel names ``finsent.serving`` (the installed package) as the pyfunc
loader module, and the bundle holds only safetensors weights and JSON / text files.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

from finsent.errors import FinsentError, VerificationFailed

MANIFEST_TAG = "finsent.files_sha256"
DOWNLOAD_META = "registered_model_meta"  # written by MLflow's own download (name + version), never stored
PYFUNC = "python_function"
MODEL_URI = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[\w-]+))$")


@dataclass(frozen=True)
class VerifiedModel:
    """A registered version downloaded to ``path`` whose files all match its seal."""

    name: str
    version: str
    path: Path
    files: int

    @property
    def bundle(self) -> Path:
        return bundle_dir(self.path)


def file_hashes(folder: Path) -> dict[str, str]:
    """relative path -> sha256 of every file under ``folder`` (MLflow's download marker left out)."""
    hashes = {}
    for path in sorted(Path(folder).rglob("*")):
        relative = path.relative_to(folder).as_posix()
        if path.is_file() and relative != DOWNLOAD_META:
            digest = hashlib.sha256()
            with path.open("rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    digest.update(block)
            hashes[relative] = digest.hexdigest()
    return hashes


def differences(sealed: dict[str, str], actual: dict[str, str]) -> list[str]:
    """What differs between the seal and the files, one phrase per file ([] when they match)."""
    changed = [f"{path} changed" for path in sorted(sealed) if path in actual and actual[path] != sealed[path]]
    missing = [f"{path} missing" for path in sorted(sealed) if path not in actual]
    added = [f"{path} added" for path in sorted(actual) if path not in sealed]
    return changed + missing + added


def bundle_dir(local_model: Path) -> Path:
    """The adapter bundle inside a downloaded model version (the pyfunc flavor's data folder)."""
    import yaml

    conf = yaml.safe_load((Path(local_model) / "MLmodel").read_text())["flavors"][PYFUNC]
    return Path(local_model) / conf["data"]


def champion_uri(registry) -> str:
    """The URI of the champion of a ``RegistryParams``."""
    return f"models:/{registry.model_name}@{registry.champion_alias}"


def parse_model_uri(uri: str) -> tuple[str, str | None, str | None]:
    """``models:/NAME/VERSION`` or ``models:/NAME@ALIAS`` -> (name, version, alias)."""
    match = MODEL_URI.match(uri)
    if match is None:
        raise FinsentError(f"model {uri!r}: give a registered model, models:/NAME/VERSION or models:/NAME@ALIAS "
                           f"(only registered versions carry the file seal that is checked before loading)")
    return match["name"], match["version"], match["alias"]


def download_version(name: str, version: str, into: Path) -> Path:
    """The stored files of a registered version, unchecked, in ``into`` (``fetch_verified`` checks them)."""
    import mlflow

    return Path(mlflow.artifacts.download_artifacts(f"models:/{name}/{version}", dst_path=str(into)))


def seal(client, name: str, version: str, expected_bundle: Path | None = None) -> dict[str, str]:
    """Hash the stored files of a freshly registered version and record them in its tag. With
    ``expected_bundle`` (the run's DVC-tracked adapter), refuse to seal a stored bundle that differs from it."""
    with tempfile.TemporaryDirectory() as scratch:
        local = download_version(name, version, Path(scratch))
        hashes = file_hashes(local)
        if expected_bundle is not None:
            inside = bundle_dir(local).relative_to(local).as_posix()
            stored = {path.removeprefix(inside + "/"): digest for path, digest in hashes.items()
                      if path.startswith(inside + "/")}
            problems = differences(file_hashes(expected_bundle), stored)
            if problems:
                raise VerificationFailed(f"{name} v{version}: the stored bundle is not the trained adapter "
                                   f"({'; '.join(problems)}); not sealed, so it never loads: rerun `finsent run`")
    client.set_model_version_tag(name, version, MANIFEST_TAG, json.dumps(hashes, sort_keys=True,
                                                                         separators=(",", ":")))
    return hashes


def sealed_hashes(client, name: str, version: str) -> dict[str, str] | None:
    raw = client.get_model_version(name, version).tags.get(MANIFEST_TAG)
    return json.loads(raw) if raw else None


def resolve_version(client, uri: str) -> tuple[str, str]:
    """A registered model URI -> (name, version), an alias resolved once (so it cannot move mid-load)."""
    from mlflow.exceptions import MlflowException

    name, version, alias = parse_model_uri(uri)
    try:
        if alias is not None:
            return name, str(client.get_model_version_by_alias(name, alias).version)
        client.get_model_version(name, version)
    except MlflowException as exc:
        raise FinsentError(f"cannot load {uri}: {str(exc).splitlines()[0]} (run `finsent run` first?)") from exc
    return name, version


def fetch_verified(uri: str, into: Path, client=None) -> VerifiedModel:
    """Download a registered version into ``into`` and check every file against its seal; raise FinsentError
    (one line naming the files) on any difference, before anything in it is read."""
    from mlflow import MlflowClient

    client = client or MlflowClient()
    name, version = resolve_version(client, uri)
    sealed = sealed_hashes(client, name, version)
    if sealed is None:
        raise FinsentError(f"refusing to load {name} v{version}: it has no file seal ({MANIFEST_TAG}), so its "
                           f"files cannot be checked; register it again with `finsent run`")
    folder = Path(into) / f"{name}-v{version}"  # a folder of its own: whatever else ``into`` holds is not the model's
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    local = download_version(name, version, folder)
    problems = differences(sealed, file_hashes(local))
    if problems:
        raise VerificationFailed(f"refusing to load {name} v{version}: {'; '.join(problems)} since registration "
                           f"(sha256 against the seal in the registry); nothing of it was loaded. "
                           f"`finsent lineage verify {name}/{version}` reports every link")
    return VerifiedModel(name, version, local, len(sealed))


def fetch_into(uri: str, out: Path) -> VerifiedModel:
    """``fetch_verified`` into a new folder ``out`` (for ``mlflow models serve -m out`` or shipping): the files
    land there only once they all matched their seal."""
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise FinsentError(f"--out {out}: exists and is not an empty folder; give a new folder")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".finsent-fetch-", dir=out.parent) as scratch:
            verified = fetch_verified(uri, Path(scratch))
            if out.exists():
                out.rmdir()
            shutil.move(str(verified.path), str(out))
    except OSError as exc:
        raise FinsentError(f"--out {out}: cannot write there ({exc.strerror or exc}); give a folder you can "
                           f"write") from exc
    return VerifiedModel(verified.name, verified.version, out, verified.files)
