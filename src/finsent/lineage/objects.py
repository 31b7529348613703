"""Content-addressed DVC objects, read by the md5 that dvc.lock recorded, from the local cache or the
remote. A file out's object is its bytes; a directory out's ``<md5>.dir`` object is a JSON list of
{relpath, md5} whose own md5 is the recorded one, so every byte can be checked against the lock."""

from __future__ import annotations

import hashlib
import json
from contextlib import contextmanager
from pathlib import Path

from finsent.errors import FinsentError


@contextmanager
def object_stores(root: Path):
    """(local cache, default remote or None, remote name/why) of the DVC project at ``root``."""
    from dvc.exceptions import DvcException, NotDvcRepoError
    from finsent.versioning import open_repo

    try:
        repo = open_repo(root)
    except NotDvcRepoError as exc:
        raise FinsentError(f"{root} is not a finsent project (no .dvc/): run this in a clone of the project, "
                           f"whose DVC remote holds the run's outputs") from exc
    with repo:
        try:
            remote = repo.cloud.get_remote_odb(None)
            remote_name = repo.config["core"].get("remote")
        except DvcException as exc:  # no default remote configured, or an unusable one
            remote, remote_name = None, f"no usable DVC remote ({str(exc).splitlines()[0]})"
        yield repo.cache.local, remote, remote_name


def read_object(store, oid: str) -> bytes | None:
    """The object's bytes, or None when the store does not hold it."""
    path = store.oid_to_path(oid)
    if not store.fs.exists(path):
        return None
    return store.fs.cat_file(path)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()  # DVC's content address, not a security hash


def dir_entries(data: bytes) -> list[dict]:
    try:
        return json.loads(data)
    except json.JSONDecodeError as exc:
        raise FinsentError(f"a DVC directory listing is not JSON ({exc})") from exc


def fetch_file(stores: tuple, oid: str) -> bytes | None:
    """From the local cache when it has a good copy, else from the remote; None when neither has it."""
    for store in stores:
        if store is None:
            continue
        data = read_object(store, oid)
        if data is not None and md5(data) == oid.removesuffix(".dir"):
            return data
    return None
