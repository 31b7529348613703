"""`finsent lineage verify`: re-hash every artifact the chain names and compare with the recorded hash.

Links checked, each reported OK / MISMATCH / MISSING with what was compared:
- every stage output in the run's dvc.lock: the copy in the local DVC cache (when there is one) and
  the copy in the DVC remote, byte for byte against the recorded md5 (for a folder: its listing and
  every file in it) — the remote is always read, since that is the copy an audit relies on;
- the raw input files, by sha256 at the path they were read from (raw files are not stored by DVC;
  the ingested dataset is);
- every file of the registered model version (MLflow artifacts) against the sha256 seal made at registration,
  and its adapter bundle against the adapter in dvc.lock;
- the base model weights, by sha256, where the base is available on this machine.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from finsent import layout
from finsent.data.sources import sha256_file
from finsent.lineage.objects import dir_entries, fetch_file, md5, object_stores, read_object

OK, MISMATCH, MISSING = "OK", "MISMATCH", "MISSING"


def _check_copy(store, oid: str) -> tuple[str, str]:
    """One store's copy of an out: (status, detail)."""
    data = read_object(store, oid)
    if data is None:
        return MISSING, "not there"
    if md5(data) != oid.removesuffix(".dir"):
        return MISMATCH, f"content hashes to {md5(data)}"
    if not oid.endswith(".dir"):
        return OK, "ok"
    bad, absent = [], []
    for entry in dir_entries(data):
        member = read_object(store, entry["md5"])
        if member is None:
            absent.append(entry["relpath"])
        elif md5(member) != entry["md5"]:
            bad.append(entry["relpath"])
    if bad:
        return MISMATCH, f"{', '.join(bad)} differ"
    if absent:
        return MISSING, f"{', '.join(absent)} not there"
    return OK, "ok"


def _out_link(out: dict, cache, remote, remote_name: str) -> dict:
    copies = {}
    if cache is not None and read_object(cache, out["md5"]) is not None:
        copies["cache"] = _check_copy(cache, out["md5"])
    copies["remote"] = _check_copy(remote, out["md5"]) if remote is not None else (MISSING, remote_name)
    statuses = [status for status, _ in copies.values()]
    # the remote is the durable copy: an out only the local cache holds is not OK for an audit
    status = MISMATCH if MISMATCH in statuses else copies["remote"][0]
    detail = "; ".join(f"{where} {text}" for where, (_, text) in copies.items())
    return {"link": f"{out['stage']}: {out['path']}", "status": status, "recorded": out["md5"], "detail": detail}


def _raw_link(raw: dict, project: Path) -> dict:
    path = Path(raw.get("path") or "")
    path = path if path.is_absolute() else project / path  # relative to the project the run was made in
    link = {"link": f"raw input: {raw['source']}", "recorded": raw["sha256"]}
    if not raw.get("path") or not path.is_file():
        return {**link, "status": MISSING, "detail": f"not found at {raw.get('path')} (raw files are outside DVC; "
                                                     f"the ingested dataset is checked above)"}
    actual = sha256_file(path)
    return {**link, "status": OK if actual == raw["sha256"] else MISMATCH,
            "detail": f"{path} sha256 {actual}"}


def _model_links(chain: dict, adapter: dict | None, stores: tuple) -> list[dict]:
    """The registered version's files must match the seal made at registration, and its bundle must be the
    adapter DVC recorded: same files, same bytes."""
    from mlflow import MlflowClient

    from finsent.model_files import (MANIFEST_TAG, bundle_dir, differences, download_version, file_hashes,
                                     sealed_hashes)

    model = chain["model"]
    sealed = sealed_hashes(MlflowClient(), model["name"], model["version"])
    seal_link = {"link": "registered model files vs their seal", "recorded": f"tag {MANIFEST_TAG}"}
    link = {"link": "registered model bundle vs dvc.lock adapter", "recorded": adapter["md5"] if adapter else None}
    listing = fetch_file(stores, adapter["md5"].removesuffix(".dir") + ".dir") if adapter else None
    with tempfile.TemporaryDirectory() as scratch:
        local = download_version(model["name"], model["version"], Path(scratch))
        problems = differences(sealed, file_hashes(local)) if sealed is not None else None
        bundle = bundle_dir(local) if (local / "MLmodel").is_file() else local / "MLmodel-missing"
        differ = [] if listing is None else [
            e["relpath"] for e in dir_entries(listing)
            if not (bundle / e["relpath"]).is_file() or md5((bundle / e["relpath"]).read_bytes()) != e["md5"]]
    if sealed is None:
        seal_link.update(status=MISSING, detail="the version has no seal (registered before sealing, or interrupted)")
    elif problems:
        seal_link.update(status=MISMATCH, detail="; ".join(problems))
    else:
        seal_link.update(status=OK, detail=f"{len(sealed)} files, sha256 identical")
    if adapter is None:
        link.update(status=MISSING, detail=f"no {layout.ADAPTER_DIR} output in dvc.lock")
    elif listing is None:
        link.update(status=MISSING, detail="the adapter listing is in neither the cache nor the remote")
    elif differ:
        link.update(status=MISMATCH, detail=f"{', '.join(differ)} differ")
    else:
        link.update(status=OK, detail=f"{len(dir_entries(listing))} files identical")
    return [seal_link, link]


def _base_link(base: dict) -> dict:
    from finsent.base_model import resolve_base, weights_sha256
    from finsent.errors import FinsentError

    link = {"link": f"base model: {base['base']}", "recorded": base["weights_sha256"]}
    try:
        recorded = base.get("path")  # bundles made before the identity stopped naming the trainer's path
        path = Path(recorded) if recorded and Path(recorded).is_dir() else resolve_base(base["base"])
    except FinsentError as exc:
        return {**link, "status": MISSING, "detail": str(exc)}
    actual = weights_sha256(path)
    return {**link, "status": OK if actual == base["weights_sha256"] else MISMATCH,
            "detail": f"{path} sha256 {actual}"}


def verify(chain: dict, project: Path) -> list[dict]:
    links = []
    lock = chain["dvc_lock"]
    with object_stores(project) as (cache, remote, remote_name):
        if "missing" in lock:
            links.append({"link": "dvc.lock", "status": MISSING, "recorded": None, "detail": lock["missing"]})
        else:
            links += [_out_link(out, cache, remote, remote_name) for out in lock["outs"]]
        adapter = None if "missing" in lock else next((o for o in lock["outs"] if o["path"] == layout.ADAPTER_DIR), None)
        links += _model_links(chain, adapter, (cache, remote))
    raw = chain["raw_inputs"]
    links += ([{"link": "raw inputs", "status": MISSING, "recorded": None, "detail": raw["missing"]}]
              if isinstance(raw, dict) else [_raw_link(r, project) for r in raw if not r.get("skipped")])
    base = chain["base_model"]
    links.append(_base_link(base) if "missing" not in base else
                 {"link": "base model", "status": MISSING, "recorded": None, "detail": base["missing"]})
    return links


def render(links: list[dict]) -> str:
    width = max(len(link["link"]) for link in links)
    lines = [f"{link['status']:<9} {link['link']:<{width}}  recorded {link['recorded']}  {link['detail']}"
             for link in links]
    counts = {s: sum(1 for link in links if link["status"] == s) for s in (OK, MISMATCH, MISSING)}
    lines.append(f"{counts[OK]} ok, {counts[MISMATCH]} mismatch, {counts[MISSING]} missing")
    return "\n".join(lines)
