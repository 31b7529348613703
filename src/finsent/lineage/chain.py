"""`finsent lineage`: the chain from a registered model version back to how it was made.

Everything comes from the MLflow store (the version, its run, the artifacts the flow logged with
it: lineage.json, dvc.lock, params.yaml, the validation / ingest / drift / gate reports) and the
registry's alias history, so it works from a fresh clone given access to that store. A link that
cannot be found is kept in the chain as ``{"missing": why}`` and printed as missing.
"""

from __future__ import annotations

import json
import re
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import yaml

from finsent import layout
from finsent.errors import FinsentError

REF = re.compile(r"^(?:models:/)?(?P<name>[^@/]+)(?:@(?P<alias>[^/]+)|/(?P<version>\d+))$")
# the artifacts the flow logs with every candidate run (registry.log_candidate)
ARTIFACTS = {"lineage": layout.LINEAGE_RECORD, "dvc_lock": layout.LINEAGE_LOCK, "params": layout.LINEAGE_PARAMS,
             "validation": layout.VALIDATION_REPORT, "ingest": layout.INGEST_REPORT, "drift": layout.DRIFT_REPORT,
             "gate": layout.GATE_REPORT, "metrics": layout.METRICS}
DATA_DOCS = f"{layout.DATA_DOCS}/index.html"
HEADLINE_METRICS = ("accuracy", "macro_f1", "macro_f1_ci_low", "macro_f1_ci_high", "ece", "brier", "test_rows")


def resolve(client, ref: str):
    """'name@alias', 'name/version' (or models:/...) -> the MLflow ModelVersion."""
    import mlflow
    from mlflow.exceptions import MlflowException

    match = REF.match(ref.strip())
    if not match:
        raise FinsentError(f"model reference '{ref}': use <name>@<alias> or <name>/<version>")
    try:
        if match["alias"]:
            return client.get_model_version_by_alias(match["name"], match["alias"])
        return client.get_model_version(match["name"], match["version"])
    except MlflowException as exc:
        raise FinsentError(f"{ref}: not in the registry at {mlflow.get_registry_uri()} "
                           f"({str(exc).splitlines()[0]})") from exc


def _time(ms: int | None) -> str | None:
    return datetime.fromtimestamp(ms / 1000, timezone.utc).isoformat(timespec="seconds") if ms else None


def _artifacts(client, run_id: str, scratch: Path) -> dict:
    """Each lineage artifact's content, or {"missing": why}."""
    from mlflow.exceptions import MlflowException

    found = {}
    for key, path in ARTIFACTS.items():
        try:
            local = Path(client.download_artifacts(run_id, path, str(scratch)))
            text = local.read_text()
            found[key] = text if key == "dvc_lock" else (yaml.safe_load(text) if key == "params"
                                                         else json.loads(text))
        except (MlflowException, OSError, ValueError, yaml.YAMLError) as exc:  # absent or unreadable
            found[key] = {"missing": f"artifact {path} not in run {run_id} ({str(exc).splitlines()[0][:120]})"}
    return found


def _outs(lock_text: str) -> list[dict]:
    lock = yaml.safe_load(lock_text) or {}
    return [{"stage": stage, "path": out["path"], "md5": out.get("md5"), "size": out.get("size"),
             "nfiles": out.get("nfiles")}
            for stage, entry in (lock.get("stages") or {}).items() for out in entry.get("outs", [])]


def _decisions(client, model_name: str, version: str) -> list[dict]:
    from finsent.promotion import history

    return [e for e in history(client, model_name)
            if version in (e.get("candidate"), e.get("to_version"), e.get("from_version"))]


def _present(value):
    return value is not None and not (isinstance(value, dict) and "missing" in value)


def build_chain(ref: str) -> dict:
    from mlflow import MlflowClient

    client = MlflowClient()
    version = resolve(client, ref)
    run = client.get_run(version.run_id) if version.run_id else None
    with tempfile.TemporaryDirectory() as scratch:
        found = _artifacts(client, version.run_id, Path(scratch)) if run else {
            k: {"missing": "the model version names no MLflow run"} for k in ARTIFACTS}
    lineage = found["lineage"]
    chain = {
        "model": {"name": version.name, "version": str(version.version), "aliases": list(version.aliases or []),
                  "registered": _time(version.creation_timestamp), "gate": version.tags.get("finsent.gate"),
                  "fingerprint": version.tags.get("finsent.fingerprint")},
        "run": ({"id": run.info.run_id, "experiment_id": run.info.experiment_id, "status": run.info.status,
                 "start": _time(run.info.start_time), "end": _time(run.info.end_time), "user": run.info.user_id}
                if run else {"missing": "the model version names no MLflow run"}),
        "code": ({**lineage["code"], "finsent_version": run.data.tags.get("finsent.version")}
                 if _present(lineage) else lineage),
        "params": found["params"],
        "raw_inputs": ([{k: f.get(k) for k in ("source", "path", "sha256", "rows_read", "first_ingested_at",
                                               "skipped")}
                        for f in found["ingest"]["files"]] if _present(found["ingest"]) else found["ingest"]),
        "dvc_lock": {"outs": _outs(found["dvc_lock"])} if isinstance(found["dvc_lock"], str) else found["dvc_lock"],
        "validation": ({"success": found["validation"]["success"], "accounting": found["validation"]["accounting"],
                        "dataset_checks": found["validation"]["dataset_checks"],
                        "data_docs": _docs_link(client, run.info.run_id) if run else None}
                       if _present(found["validation"]) else found["validation"]),
        "drift": found["drift"],
        "evaluation": (_headline(run) if run and run.data.metrics else {"missing": "the run logged no metrics"}),
        "gate": found["gate"],
        "decisions": _decisions(client, version.name, str(version.version)),
        "base_model": lineage["base_model"] if _present(lineage) else lineage,
        "model_card": ({"command": f"finsent card {version.name}/{version.version}",
                        "where": "the model version's description; reports/model_card.md (+ .html) in its run"}
                       if (version.description or "").startswith(layout.CARD_HEADING)
                       else {"missing": "the version's description is no model card"}),
    }
    chain["dvc_lock_text"] = found["dvc_lock"] if isinstance(found["dvc_lock"], str) else None
    return chain


def _headline(run) -> dict:
    """The test figures of the run: metrics named test_<name> (a count, test_rows, is a param); a run logged
    before the prefix has them unprefixed."""
    found = {}
    for key in HEADLINE_METRICS:
        value = run.data.metrics.get(f"test_{key}", run.data.metrics.get(key, run.data.params.get(key)))
        if value is not None:
            found[key] = float(value)
    return found


def _docs_link(client, run_id: str) -> str | dict:
    names = {f.path for f in client.list_artifacts(run_id, layout.DATA_DOCS)}
    if DATA_DOCS in names:
        return f"runs:/{run_id}/{DATA_DOCS}"
    return {"missing": f"no {DATA_DOCS} in run {run_id} (made before Data Docs were logged?)"}


def _flat(prefix: str, value) -> list[str]:
    if isinstance(value, dict) and value:
        return [line for k, v in value.items() for line in _flat(f"{prefix}.{k}" if prefix else str(k), v)]
    return [f"{prefix}={json.dumps(value)}"]


def _v(version) -> str:
    return f"v{version}" if version else "-"


def render(chain: dict) -> str:
    """The chain as text an auditor reads top to bottom; missing links say so and why."""
    def missing(value) -> str | None:
        return f"MISSING: {value['missing']}" if isinstance(value, dict) and "missing" in value else None

    model, lines = chain["model"], []
    lines.append(f"{model['name']} v{model['version']} [{', '.join(model['aliases']) or 'no alias'}]  "
                 f"registered {model['registered']}  gate {model['gate']}  fingerprint {model['fingerprint']}")
    run = chain["run"]
    lines.append("run         " + (missing(run) or f"{run['id']}  {run['start']} -> {run['end']}  user {run['user']}"
                                   f"  {run['status']}"))
    code = chain["code"]
    lines.append("code        " + (missing(code) or f"git {code.get('commit') or 'none'} (dirty: {code.get('dirty')})"
                                    f"  finsent {code.get('finsent_version')}"
                                    + (f"  ({code['why']})" if code.get("why") else "")))
    params = chain["params"]
    lines.append("params      " + (missing(params) or "params.yaml as used by the run:"))
    if not missing(params):
        lines += [f"              {line}" for line in _flat("", params)]
    raw = chain["raw_inputs"]
    lines.append("raw inputs  " + (missing(raw) or f"{len(raw)} file(s)"))
    if not missing(raw):
        lines += [f"              {f['source']}  sha256 {f['sha256']}  "
                  + (f.get("skipped") or f"{f['rows_read']} rows, first ingested {f['first_ingested_at']}")
                  for f in raw]
    lock = chain["dvc_lock"]
    lines.append("dvc.lock    " + (missing(lock) or f"{len(lock['outs'])} stage outputs"))
    if not missing(lock):
        lines += [f"              {o['stage']:<9} {o['path']:<38} md5 {o['md5']}" for o in lock["outs"]]
    validation = chain["validation"]
    if missing(validation):
        lines.append("validation  " + missing(validation))
    else:
        counts = validation["accounting"]
        lines.append(f"validation  GX success {validation['success']}; read {counts['rows_read']} = accepted "
                     f"{counts['rows_accepted']} + quarantined {counts['rows_quarantined']} + duplicates merged "
                     f"{counts['duplicates_merged']}")
        docs = validation["data_docs"]
        lines.append("              Data Docs: " + (missing(docs) or docs))
    drift = chain["drift"]
    lines.append("drift       " + (missing(drift) or (
        f"vs {drift['reference']}: " + "; ".join(f"{c['check']} {c['observed']}" for c in drift["checks"])
        + (" (DRIFTED)" if drift["drifted"] else "") if drift.get("compared") else drift.get("why", ""))))
    evaluation = chain["evaluation"]
    lines.append("evaluation  " + (missing(evaluation) or "  ".join(f"{k} {round(v, 4)}" for k, v in evaluation.items())))
    gate = chain["gate"]
    lines.append("gates       " + (missing(gate) or ("passed" if gate["passed"] else "FAILED")
                                   + (f" (vs champion v{gate['compared_with_champion']})"
                                      if gate.get("compared_with_champion") else "")))
    if not missing(gate):
        lines += [f"              {'ok  ' if c['passed'] else 'FAIL'} {c['gate']}"
                  + (f"({c['metric']})" if c.get("metric") else "") + f": observed {c['observed']}, threshold "
                  f"{c['threshold']}" for c in gate["checks"]]
    decisions = chain["decisions"]
    lines.append("decisions   " + (f"{len(decisions)} recorded" if decisions else "none recorded for this version"))
    for e in decisions:
        change = (f"{e['alias']}: {_v(e.get('from_version'))} -> {_v(e['to_version'])}" if e.get("moved", True)
                  else f"v{e.get('candidate')} NOT promoted (champion stays {_v(e.get('to_version'))})")
        lines.append(f"              #{e['seq']} {e['time']} {change} by {e['actor']}: {e['reason']}")
    base = chain["base_model"]
    lines.append("base model  " + (missing(base) or f"{base['base']} ({base.get('revision')})  sha256 "
                                    f"{base['weights_sha256']}" + (f"  path {base['path']}" if base.get("path") else "")))
    card = chain["model_card"]
    lines.append("model card  " + (missing(card) or f"`{card['command']}` ({card['where']})"))
    return "\n".join(lines)
