"""`finsent reproduce`: re-make a registered version from its recorded data and params, and compare.

The ingested dataset recorded in the run's dvc.lock is restored from the DVC cache or remote (raw
files are outside DVC), the run's params.yaml is written to a scratch folder, and the same stage
functions the flow runs (validate, split, tokenize, train, evaluate) re-run there. Verdict:
"identical" when the adapter weights hash the same (same machine and device type), "within
tolerance" when they differ but accuracy and macro-F1 are within ``tolerance`` (other hardware),
otherwise "not reproduced". Every intermediate output is compared with its recorded hash too.
"""

from __future__ import annotations

import contextlib
import json
import shutil
from pathlib import Path

import yaml

from finsent import layout, stages
from finsent.errors import FinsentError
from finsent.lineage.objects import dir_entries, fetch_file, md5, object_stores

WEIGHTS = "adapter_model.safetensors"
# outputs whose bytes depend only on data, params and code (not on paths or timings)
COMPARED = {"validate": layout.ACCEPTED, "split": layout.SPLIT_DIR}
REMADE = stages.NAMES[stages.NAMES.index("validate"):]  # every stage after the recorded ingested data


def _recorded(chain: dict) -> dict[str, dict]:
    if "missing" in chain["dvc_lock"] or "missing" in chain["params"]:
        raise FinsentError("cannot reproduce: " + chain["dvc_lock"].get("missing", chain["params"].get("missing", "")))
    return {out["path"]: out for out in chain["dvc_lock"]["outs"]}


def _same_as_recorded(path: Path, out: dict, stores: tuple) -> bool | None:
    """Does the re-made output hash like the recorded one (None: the recording is not available)."""
    if out["md5"].endswith(".dir"):
        listing = fetch_file(stores, out["md5"])
        if listing is None:
            return None
        return all((path / e["relpath"]).is_file() and md5((path / e["relpath"]).read_bytes()) == e["md5"]
                   for e in dir_entries(listing))
    return md5(path.read_bytes()) == out["md5"]


def _run_stages(work: Path, project: Path) -> dict:
    """The flow's stages, in order, on the restored data: the same calls of the stage table, in ``work``."""
    from finsent.config import load_params

    params = load_params(work / "params.yaml")
    if params.split.test_ids_file:  # pinned test ids live in git, next to the code
        pinned = Path(params.split.test_ids_file)
        (work / pinned).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(project / pinned, work / pinned)
    with contextlib.chdir(work):
        for name in REMADE:
            each = stages.stage(name)
            each.run(stages.Call(each, {option: Path(p) for option, p in each.options().items()}, params, work))
    return json.loads((work / layout.METRICS).read_text())


def reproduce(chain: dict, project: Path, work: Path, tolerance: float) -> dict:
    outs = _recorded(chain)
    ingested, adapter = outs.get(layout.INGESTED), outs.get(layout.ADAPTER_DIR)
    if ingested is None or adapter is None:
        raise FinsentError("cannot reproduce: the recorded dvc.lock has no ingested dataset or adapter")
    work.mkdir(parents=True, exist_ok=True)
    (work / "params.yaml").write_text(yaml.safe_dump(chain["params"], sort_keys=False))
    with object_stores(project) as (cache, remote, remote_name):
        stores = (cache, remote)
        data = fetch_file(stores, ingested["md5"])
        if data is None:
            raise FinsentError(f"cannot reproduce: the ingested dataset (md5 {ingested['md5']}) is in neither the "
                               f"DVC cache nor the remote ({remote_name}); `dvc remote modify --local` can point "
                               f"this clone at the run's remote")
        (work / layout.INGESTED).parent.mkdir(parents=True, exist_ok=True)
        (work / layout.INGESTED).write_bytes(data)
        metrics = _run_stages(work, project)
        listing = fetch_file(stores, adapter["md5"])
        stages = {stage: _same_as_recorded(work / path, outs[path], stores)
                  for stage, path in COMPARED.items() if path in outs}
    recorded_weights = next((e["md5"] for e in dir_entries(listing) if e["relpath"] == WEIGHTS), None) \
        if listing else None
    weights = md5((work / layout.ADAPTER_DIR / WEIGHTS).read_bytes())
    recorded_metrics = chain["evaluation"]
    deltas = {k: abs(metrics[k] - recorded_metrics[k]) for k in ("accuracy", "macro_f1") if k in recorded_metrics}
    if recorded_weights == weights:
        verdict = "identical"
    elif deltas and all(d <= tolerance for d in deltas.values()):
        verdict = "within tolerance"
    else:
        verdict = "not reproduced"
    result = {"verdict": verdict, "workdir": str(work), "adapter_weights": {"recorded": recorded_weights,
                                                                           "reproduced": weights},
              "metrics": {k: {"recorded": recorded_metrics.get(k), "reproduced": metrics[k]}
                          for k in ("accuracy", "macro_f1")},
              "max_abs_difference": max(deltas.values()) if deltas else None, "tolerance": tolerance,
              "outputs_identical": stages}
    (work / "reproduction.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def render(result: dict, chain: dict, current_code: dict) -> str:
    recorded_code = chain["code"] if "missing" not in chain["code"] else {}
    lines = [f"reproduced {chain['model']['name']} v{chain['model']['version']} in {result['workdir']}"]
    if recorded_code.get("commit") != current_code.get("commit"):
        lines.append(f"  note: code here is {current_code.get('commit')}, the run used {recorded_code.get('commit')}")
    for stage, same in result["outputs_identical"].items():
        lines.append(f"  {stage:<9} output {'identical' if same else 'differs' if same is False else 'not recorded'}")
    weights = result["adapter_weights"]
    lines.append(f"  adapter   weights md5 {weights['reproduced']} vs recorded {weights['recorded']}: "
                 f"{'identical' if weights['reproduced'] == weights['recorded'] else 'different'}")
    for name, pair in result["metrics"].items():
        lines.append(f"  {name:<9} {pair['reproduced']:.6f} vs recorded {pair['recorded']:.6f}")
    lines.append(f"verdict: {result['verdict']} (tolerance {result['tolerance']} on accuracy and macro-F1)")
    return "\n".join(lines)
