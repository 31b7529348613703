"""`finsent ...`: parses arguments and calls the stage functions; no logic of its own.

Expected failures (FinsentError) print one line and exit non-zero, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

from finsent import __version__, layout, stages
from finsent.errors import ERROR_FILE_ENV, FinsentError
from finsent.runtime import apply_defaults, exit_process, project_root, quiet_libraries, state_dir


class OneLineParser(argparse.ArgumentParser):
    """argparse, but a usage error is one line that says where the help is (no usage block)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see `{self.prog} --help`)\n")


def _params(args):
    from finsent.config import load_params

    return load_params(args.params)


def _project_params_only(args) -> None:
    """`run` and `monitor` go through DVC, which reads the project's params.yaml: another file would be
    silently ignored, so it is refused."""
    given = args.params != "params.yaml"  # the default means the project's, found from any folder inside it
    if given and Path(args.params).resolve() != (project_root() / "params.yaml").resolve():
        raise FinsentError(f"--params {args.params}: `finsent {args.command}` always reads the project's params.yaml "
                           f"(DVC tracks it); edit that file, or use `finsent run -S section.key=value`")


def _stage_call(args):
    """The table's stage with this call's paths; a missing or foreign option, or a missing input, is one line."""
    stage = stages.stage(args.stage)
    given = {option: getattr(args, option) for option in stages.OPTIONS if getattr(args, option) is not None}
    foreign = sorted(set(given) - set(stage.options()))
    if foreign:
        raise FinsentError(f"finsent stage {stage.name} has no {', '.join('--' + o for o in foreign)}; its options: "
                           f"{', '.join('--' + o for o in stage.options())}")
    missing = [f"--{option}" for option in ("out", *stage.required) if option not in given]
    if missing:
        raise FinsentError(f"finsent stage {stage.name} needs {', '.join(missing)}; the pipeline calls it as: "
                           f"{stages.command(stage)}")
    for option in stage.inputs:
        if option in given and not Path(given[option]).exists():
            raise FinsentError(f"finsent stage {stage.name}: --{option} {given[option]} not found; run the stage "
                               f"before it first (`dvc repro {stage.name}` runs what is missing)")
    return stages.Call(stage, {option: Path(value) for option, value in given.items()}, _params(args), project_root())


def cmd_stage(args) -> None:
    from finsent.run_guard import watch_parent_run

    call = _stage_call(args)
    watch_parent_run(f"stage {args.stage}")
    if args.stage == "train":
        from finsent.train import distributed

        processes = distributed.processes_wanted(call.params.train.processes)
        if processes > 1 and distributed.world()[2] == 1:
            _train_distributed(processes, args)
            return
    result = call.stage.run(call)
    if result is not None:
        print(f"{args.stage}: {json.dumps(result, default=str)}")


def cmd_dvc_yaml(args) -> None:
    """Write dvc.yaml from the stage table (src/finsent/stages.py); --check only compares."""
    target = project_root() / "dvc.yaml"
    if not target.is_file():
        raise FinsentError(f"no finsent project here ({Path.cwd()}): run it in the folder holding dvc.yaml and "
                           f"params.yaml")
    wanted = stages.dvc_yaml()
    current = target.read_text()
    if args.check:
        if current != wanted:
            raise FinsentError(f"{target} differs from the stage table in src/finsent/stages.py: run "
                               f"`finsent dvc-yaml` to regenerate it (edit the table, not the file)")
        print(f"{target}: matches the stage table ({len(stages.STAGES)} stages)")
        return
    target.write_text(wanted)
    print(f"{target}: {'unchanged' if current == wanted else 'written'} from the stage table "
          f"({len(stages.STAGES)} stages)")


def _train_distributed(processes: int, args) -> None:
    """Re-run this same `stage train` call under torchrun, one process per device; rank 0 writes the outputs."""
    import subprocess

    from finsent.train.distributed import relaunch_command, relaunch_env

    command = relaunch_command(processes, args.argv)
    print(f"train: data-parallel on {processes} processes: {' '.join(command[2:])}")
    done = subprocess.run(command, env=relaunch_env())
    if done.returncode:
        raise FinsentError(f"data-parallel training failed (torchrun exit code {done.returncode}); the ranks' "
                           f"errors are above; set train.processes: 1 to train in one process")
    summary = json.loads(Path(args.report).read_text())
    print(f"train: {json.dumps({k: summary[k] for k in ('method', 'best_epoch', 'best_val_macro_f1', 'processes')})}")


def cmd_validate(args) -> None:
    """Ingest + validate sources alone (no training): the same functions as the flow's stages."""
    import dataclasses
    import tempfile

    from finsent.data.ingest import ingest
    from finsent.data.sources import manifest
    from finsent.data.validate import validate

    params = _params(args)
    data = dataclasses.replace(params.data, sources=list(args.sources), format=args.format or params.data.format)
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="finsent-validate-"))
    summary = ingest(manifest(data)["files"], params.labels, data, out / "ingested.parquet", out / "ingest.json")
    for entry in summary["files"]:
        print(f"  {entry['source']}: " + (entry["skipped"] if entry.get("skipped") else
                                          f"{entry['rows_read']} rows ({entry['format']})"))
    try:
        report = validate(out / "ingested.parquet", params.labels, params.validation, out / "accepted.parquet",
                          out / "quarantine.parquet", out / "validation.json")  # ephemeral GX: leaves gx/ as is
    finally:
        _print_accounting(out)
    print(f"dataset checks passed: {len(report['dataset_checks'])}; label counts {report['label_counts']}")


def _print_accounting(out: Path) -> None:
    report_file = out / "validation.json"
    if report_file.is_file():
        counts = json.loads(report_file.read_text())["accounting"]
        print(f"read {counts['rows_read']} = accepted {counts['rows_accepted']} + quarantined "
              f"{counts['rows_quarantined']} + duplicates merged {counts['duplicates_merged']}  "
              f"(quarantine, report: {out})")
        from finsent.data.validate import quarantine_examples

        examples = quarantine_examples(out / "quarantine.parquet")
        if examples:
            print(f"quarantined, first {len(examples)} (texts escaped; all in {out / 'quarantine.parquet'}):")
            print("\n".join(f"  {line}" for line in examples))


def cmd_run(args) -> None:
    from finsent.run import run

    _project_params_only(args)

    run(project_root(), data=args.data, data_format=args.format, overrides=args.set_param)


def cmd_lineage(args) -> None:
    """`lineage REF` prints the chain; `lineage verify REF` re-hashes what it names."""
    from finsent.errors import VerificationFailed
    from finsent.lineage.chain import build_chain, render

    verifying = args.words[0] == "verify"
    refs = args.words[1:] if verifying else args.words
    if len(refs) != 1:
        raise FinsentError("usage: finsent lineage [verify] <name>@<alias>|<name>/<version> [--json]")
    chain = build_chain(refs[0])
    if not verifying:
        chain.pop("dvc_lock_text")
        print(json.dumps(chain, indent=2, default=str) if args.json else render(chain))
        return
    from finsent.lineage.verify import render as render_links, verify

    links = verify(chain, project_root())
    print(json.dumps(links, indent=2) if args.json else render_links(links))
    mismatched = [link["link"] for link in links if link["status"] == "MISMATCH"]
    if mismatched:
        raise VerificationFailed(f"{len(mismatched)} artifact(s) do not match their recorded hash: "
                                 f"{', '.join(mismatched)}")


def cmd_reproduce(args) -> None:
    import tempfile

    from finsent.errors import VerificationFailed
    from finsent.lineage.chain import build_chain
    from finsent.lineage.reproduce import render, reproduce
    from finsent.versioning import code_revision

    chain = build_chain(args.ref)
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="finsent-reproduce-"))
    result = reproduce(chain, project_root(), work, args.tolerance)
    print(render(result, chain, code_revision(project_root())))
    if result["verdict"] == "not reproduced":
        raise VerificationFailed(f"{args.ref} did not reproduce: metrics differ by up to "
                                 f"{result['max_abs_difference']} (> {args.tolerance}); details in {work}")


def cmd_monitor(args) -> None:
    from finsent.run import run_flow

    _project_params_only(args)
    if not Path(args.input).exists():
        raise FinsentError(f"--input {args.input}: not found; give a file or a drop folder of unlabelled text")
    from mlflow import MlflowClient

    from finsent.promotion import alias_version

    registry = _params(args).registry
    if alias_version(MlflowClient(), registry.model_name, registry.champion_alias) is None:  # before any flow starts
        raise FinsentError(f"no '{registry.champion_alias}' for '{registry.model_name}' yet: run `finsent run` first")
    root = project_root()
    out = Path(args.out).resolve() if args.out else root / "data" / "monitor" / Path(args.input).stem
    result = run_flow(root, "monitor", "monitor_flow", project_dir=str(root), source=str(Path(args.input).resolve()),
                      out_dir=str(out))
    figures, drift = result["figures"], result["drift"]
    print(f"finsent monitor: champion v{result['champion']}; read {figures['rows_read']} = scored "
          f"{figures['rows_scored']} + skipped {figures['rows_skipped']}; {figures['rows_per_second']} rows/s")
    for alert in result["alerts"]:
        print(f"  ALERT negative-share spike: {alert['entity']} {alert['period']}: {alert['share_negative']:.1%} "
              f"negative over {alert['rows']} rows (trailing {alert['trailing_mean']:.1%}, threshold "
              f"{alert['threshold']:.1%}); webhook: {alert['notified'].get('webhook')}")
    if not result["alerts"]:
        print("  no alerts")
    print("  prediction drift: " + "; ".join(f"{c['check']} {c['observed']} (max {c['threshold']})"
                                             for c in drift["checks"])
          + (" -- DRIFTED" if drift["drifted"] else "") + f"; retraining: {drift['retraining']}")
    shadow = result["shadow"]
    if shadow:
        print(f"  shadow: challenger v{shadow['challenger_version']} agrees with the champion on "
              f"{shadow['agreement']:.1%} of {shadow['rows']} rows (min {shadow['min_agreement']:.0%})"
              + (" -- BELOW MINIMUM" if shadow["below_min_agreement"] else "") + "; label shares "
              + ", ".join(f"{name} {s['difference']:+.1%}" for name, s in shadow["shares"].items())
              + "; shadow_disagreements.csv lists where they differ")
    print(f"  files: {out}/ (scored.parquet, aggregates.csv, alerts.json, prediction_drift.json, "
          f"{'shadow.json, ' if shadow else ''}monitor_report.md); MLflow run {result['mlflow_run_id']}")


def cmd_serve(args) -> None:
    """Serve the scheduled retraining deployment (blocks). Needs a Prefect server: the embedded ephemeral API
    runs no scheduler and cannot be reached from outside its process."""
    import importlib

    root = project_root()
    from prefect.settings import PREFECT_API_URL

    url = PREFECT_API_URL.value()
    if not url:
        raise FinsentError("finsent serve needs a Prefect server: start one (prefect server start) and set "
                           "PREFECT_API_URL (e.g. http://127.0.0.1:4200/api); the embedded API of `finsent run` "
                           "cannot run scheduled deployments")
    from prefect import get_client

    with get_client(sync_client=True) as client:
        unhealthy = client.api_healthcheck()
    if unhealthy is not None:
        raise FinsentError(f"Prefect API at {url} is not reachable: {str(unhealthy).splitlines()[0]}")
    os.chdir(root)  # the deployment's entrypoint (pipelines/training.py) is relative to this folder
    sys.path.insert(0, str(root))
    importlib.import_module("pipelines.deployment").serve(root)


def cmd_predict(args) -> None:
    from finsent.runtime import collector_paused
    from finsent.serving import predict_texts

    with collector_paused():  # a short command: its imports and model are most of what it makes
        frame = predict_texts(args.text, args.model)
    for row in frame.to_dict("records"):
        probabilities = "  ".join(f"{k[5:]} {v:.3f}" for k, v in row.items() if k.startswith("prob_"))
        print(f"{row['label']:<9} {probabilities}   {row['text']}")


def cmd_fetch(args) -> None:
    from finsent.model_files import champion_uri, fetch_into

    verified = fetch_into(args.model or champion_uri(_params(args).registry), Path(args.out))
    print(f"fetched {verified.name} v{verified.version} -> {verified.path} ({verified.files} files, each matching "
          f"its sha256 seal); serve it with: mlflow models serve -m {verified.path} --env-manager local")


def cmd_export(args) -> None:
    from finsent.bundle import export_merged

    meta = export_merged(Path(args.bundle), Path(args.out))
    size = sum(f.stat().st_size for f in Path(args.out).rglob("*") if f.is_file())
    how = ("AutoModelForSequenceClassification.from_pretrained" if meta.get("pooling", "cls") == "cls" else
           "finsent.bundle.load_exported (it applies the model's mean pooling)")
    print(f"merged {meta['method']} bundle {args.bundle} -> {args.out} ({size / 1e6:.1f} MB, plain transformers model; "
          f"load with {how})")


def _registry(args):
    from mlflow import MlflowClient

    return MlflowClient(), _params(args).registry


def cmd_card(args) -> None:
    """The model card of a version: its description in the registry (written by the run that registered it)."""
    from finsent.lineage.chain import resolve

    client, registry = _registry(args)
    ref = f"{registry.model_name}/{args.ref}" if args.ref.isdigit() else args.ref
    version = resolve(client, ref)
    if not (version.description or "").startswith(layout.CARD_HEADING):
        raise FinsentError(f"{ref} has no model card (its description is not one; versions registered by "
                           f"`finsent run` carry one)")
    print(version.description, end="")


def cmd_history(args) -> None:
    from datetime import datetime, timezone

    from finsent.promotion import champion_at, describe_event, history

    client, registry = _registry(args)
    events = history(client, registry.model_name)
    if args.at:
        try:
            moment = datetime.fromisoformat(args.at)
        except ValueError:
            raise FinsentError(f"--at {args.at!r}: not an ISO date/time; e.g. 2026-11-30 or "
                               f"2026-11-30T14:05+01:00") from None
        moment = (moment if moment.tzinfo else moment.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)
        holder = champion_at(events, moment.isoformat(timespec="milliseconds"), registry.champion_alias)
        print(f"{registry.model_name}@{registry.champion_alias} at {moment.isoformat()}: "
              f"{'v' + holder if holder else 'none'}")
        return
    if not events:
        print(f"no alias changes recorded for '{registry.model_name}'")
    for e in events:
        print(describe_event(e))


def cmd_rollback(args) -> None:
    from finsent.promotion import acting_person, rollback

    client, registry = _registry(args)
    event = rollback(client, registry, args.reason, actor=f"manual ({acting_person()})")
    print(f"rolled back: {registry.champion_alias} v{event['from_version']} -> v{event['to_version']} "
          f"(history #{event['seq']})")


def _registered_version(client, registry, version: str, consequence: str) -> str:
    if not version.isdigit() or int(version) < 1:
        raise FinsentError(f"version {version!r}: give a registered version number (1, 2, ...); "
                           f"`finsent history` lists them")
    from mlflow.exceptions import MlflowException

    try:
        client.get_model_version(registry.model_name, version)
    except MlflowException:
        raise FinsentError(f"{registry.model_name} has no version {version}; {consequence}") from None
    return version


def cmd_decide(args) -> None:
    """`finsent approve` / `finsent reject`: the acting person's decision on the challenger."""
    from finsent.promotion import acting_person, approve, reject

    client, registry = _registry(args)
    version = _registered_version(client, registry, args.version, "nothing " + {"approve": "approved", "reject": "rejected"}[args.command])
    person = acting_person()
    if args.command == "approve":
        event = approve(client, registry, version, approver=person, reason=args.reason)
        print(f"approved by {person}: v{version} is {registry.champion_alias}"
              + (f"; v{event['from_version']} is now {registry.previous_alias}" if event and event["from_version"]
                 else "") + (f" (history #{event['seq']})" if event else ""))
    else:
        event = reject(client, registry, version, actor=person, reason=args.reason)
        print(f"rejected by {person}: v{version} is no longer {registry.challenger_alias}; it stays registered "
              f"(history #{event['seq']})")


def cmd_promote(args) -> None:
    from finsent.promotion import acting_person, alias_version, promote

    client, registry = _registry(args)
    if not args.force:
        raise FinsentError("manual promotion skips the gates: pass --force and --reason to record the override")
    _registered_version(client, registry, args.version, "nothing promoted")
    current = alias_version(client, registry.model_name, registry.champion_alias)
    event = promote(client, registry, args.version, expected_champion=current, force=True,
                    reason=f"manual override: {args.reason}", actor=f"manual ({acting_person()})")
    print(f"v{args.version} is {registry.champion_alias}" + (f" (history #{event['seq']})" if event else
                                                             " already"))


def cmd_tune(args) -> None:
    """Search tune.space on the tokenized data of the last run; --apply writes the best trial to params.yaml."""
    from finsent.tune import tune, write_overrides

    root = project_root()
    params = _params(args)
    tokenized = root / "data" / "tokenized"
    if not (tokenized / "train.parquet").is_file():
        raise FinsentError(f"no tokenized data in {tokenized}: run `finsent run` (or `dvc repro tokenize`) first")
    try:
        result = tune(tokenized, params, state_dir(root) / "tune.db", n_trials=args.trials,
                      timeout_minutes=args.timeout_minutes, project=root)
    except KeyboardInterrupt:
        print("finsent: interrupted; `finsent tune` resumes the study", file=sys.stderr)
        raise SystemExit(130) from None
    print(f"study {result.study_name} ({result.n_complete} complete, {result.n_pruned} pruned"
          + (f", {result.n_failed} failed" if result.n_failed else "") + f"; {result.storage})")
    print(f"best trial {result.best_trial}: validation macro-F1 {result.best_value:.4f}")
    for key, value in result.best_overrides.items():
        print(f"  -S {key}={value}")
    if args.apply:
        write_overrides(Path(args.params), result.best_overrides, result.study_name, result.best_trial,
                        result.best_value)
        print(f"applied to {args.params} (tune.applied names study and trial); run `finsent run` to train, "
              f"gate and register it")
    else:
        print("re-run with --apply to write them to params.yaml (the study is kept: no trial runs again)")


def cmd_doctor(args) -> None:
    from finsent.doctor import doctor

    root = project_root()
    print(f"finsent doctor (project {root})")
    checks = doctor(root)
    for check in checks:
        print(check.line())
    failed = [check.name for check in checks if not check.ok]
    if failed:
        raise FinsentError(f"{', '.join(failed)}: not usable (see above)")


EXAMPLES = {  # one real call per subcommand, shown by `finsent <command> --help`
    "run": "finsent run -S train.epochs=2 --data data/incoming",
    "validate": "finsent validate data/incoming/news.csv --out /tmp/checked",
    "stage": "finsent stage split --input data/processed/accepted.parquet --out data/processed/split",
    "dvc-yaml": "finsent dvc-yaml --check",
    "lineage": "finsent lineage finsent-sentiment@champion && finsent lineage verify finsent-sentiment/1",
    "reproduce": "finsent reproduce finsent-sentiment/1 --workdir /tmp/reproduced",
    "monitor": "finsent monitor --input data/monitor/today.csv",
    "serve": "PREFECT_API_URL=http://127.0.0.1:4200/api finsent serve",
    "predict": 'finsent predict "Operating profit rose 20 % to EUR 3.1 mn" "The company swung to a net loss"',
    "fetch": "finsent fetch models:/finsent-sentiment@champion --out served/champion",
    "export": "finsent export --out merged-model",
    "card": "finsent card 1",
    "history": "finsent history --at 2026-11-28T21:00",
    "rollback": 'finsent rollback --reason "bad outputs on Monday\'s news"',
    "approve": 'FINSENT_ACTOR=risk.reviewer finsent approve 7 --reason "validated on Q3 news"',
    "reject": 'finsent reject 7 --reason "misreads guidance cuts as neutral"',
    "promote": 'finsent promote 7 --force --reason "hotfix approved by risk"',
    "doctor": "finsent doctor",
}


def _explain(commands) -> None:
    """Each subcommand's --help starts with what it does (its line in `finsent --help`) and ends with an example."""
    for action in commands._choices_actions:  # argparse keeps each subcommand's help line only here
        sub = commands.choices[action.dest]
        sub.formatter_class = argparse.RawDescriptionHelpFormatter
        sub.description = sub.description or f"{action.help[0].upper()}{action.help[1:]}."
        if action.dest in EXAMPLES:
            sub.epilog = f"example:\n  {EXAMPLES[action.dest]}"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="finsent", description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml", help="params file (default: params.yaml)")
    parser.add_argument("--version", action="version", version=f"finsent {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="run the training flow: stages, gate, register, promote, push")
    run.add_argument("--data", help="train on this file or drop folder instead of data.sources (this run only)")
    run.add_argument("-S", "--set-param", action="append", default=[], metavar="SECTION.KEY=VALUE",
                     help="override a params.yaml value for this run only, e.g. -S train.epochs=2 -S peft.lora.r=16 "
                          "(dvc.lock and MLflow record the values used; params.yaml is left as it was)")
    run.add_argument("--format", help="format of --data: csv, tsv, jsonl, parquet, phrasebank (default: detect)")
    run.set_defaults(func=cmd_run)

    validate = commands.add_parser("validate", help="ingest + validate files or drop folders without training")
    validate.add_argument("sources", nargs="+", help="data files and/or drop folders (combined into one dataset)")
    validate.add_argument("--format", help="csv, tsv, jsonl, parquet, phrasebank (default: data.format)")
    validate.add_argument("--out", help="folder for accepted/quarantine/report files (default: a temp folder)")
    validate.set_defaults(func=cmd_validate)

    stage = commands.add_parser("stage", help="run one pipeline stage (what dvc.yaml calls)")
    stage.add_argument("stage", choices=stages.NAMES)
    for option in stages.OPTIONS:
        users = [each for each in stages.STAGES if option in each.options()]
        stage.add_argument(f"--{option}", metavar="PATH", help=", ".join(f"{each.name}: {each.path(option)}"
                                                                         for each in users))
    stage.set_defaults(func=cmd_stage)

    dvc_yaml = commands.add_parser("dvc-yaml", help="write dvc.yaml from the stage table (src/finsent/stages.py)")
    dvc_yaml.add_argument("--check", action="store_true", help="only say whether dvc.yaml matches the table")
    dvc_yaml.set_defaults(func=cmd_dvc_yaml)

    lineage = commands.add_parser("lineage", help="how a registered version was made; 'verify' re-hashes it all")
    lineage.add_argument("words", nargs="+", metavar="[verify] REF", help="<name>@<alias> or <name>/<version>, "
                                                                          "after 'verify' to check the hashes")
    lineage.add_argument("--json", action="store_true", help="machine-readable output")
    lineage.set_defaults(func=cmd_lineage)

    reproduce = commands.add_parser("reproduce", help="re-make a registered version from its recorded data and "
                                                     "params, and compare")
    reproduce.add_argument("ref", help="<name>/<version> or <name>@<alias>")
    reproduce.add_argument("--workdir", help="scratch folder (default: a new temp folder)")
    reproduce.add_argument("--tolerance", type=float, default=0.005,
                           help="max |difference| of accuracy and macro-F1 when the weights differ (default 0.005)")
    reproduce.set_defaults(func=cmd_reproduce)

    monitor = commands.add_parser("monitor", help="score new unlabelled text with the champion: aggregates, "
                                                 "spike alerts, prediction drift")
    monitor.add_argument("--input", required=True, help="a file or a drop folder of unlabelled text")
    monitor.add_argument("--out", help="output folder (default: data/monitor/<input name>)")
    monitor.set_defaults(func=cmd_monitor)

    serve = commands.add_parser("serve", help="serve the scheduled retraining deployment (params.yaml schedule:); "
                                             "needs a Prefect server in PREFECT_API_URL")
    serve.set_defaults(func=cmd_serve)

    predict = commands.add_parser("predict", help="label finance text with a registered model")
    predict.add_argument("text", nargs="+", help="one or more sentences")
    predict.add_argument("--model", help="model URI (default: models:/<registry.model_name>@champion)")
    predict.set_defaults(func=cmd_predict)
    fetch = commands.add_parser("fetch", help="download a registered model into a folder, every file checked "
                                             "against its seal (then `mlflow models serve -m FOLDER`)")
    fetch.add_argument("model", nargs="?", help="model URI (default: models:/<registry.model_name>@champion)")
    fetch.add_argument("--out", required=True, help="a new or empty folder")
    fetch.set_defaults(func=cmd_fetch)
    export = commands.add_parser("export", help="fold an adapter bundle into its base: a plain transformers model")
    export.add_argument("bundle", nargs="?", default=layout.ADAPTER_DIR,
                        help=f"bundle folder (default: {layout.ADAPTER_DIR})")
    export.add_argument("--out", required=True, help="folder for the merged model")
    export.set_defaults(func=cmd_export)
    card = commands.add_parser("card", help="print the model card of a registered version: data, model, test figures, "
                                            "known limitations, gates, decision")
    card.add_argument("ref", help="a version number of the project's model, or <name>@<alias> / <name>/<version>; "
                                  "e.g. finsent card 1, finsent card finsent-sentiment@champion")
    card.set_defaults(func=cmd_card)

    history = commands.add_parser("history", help="alias history of the registered model (who was champion when)")
    history.add_argument("--at", help="ISO date/time: print the champion at that moment (UTC unless given)")
    history.set_defaults(func=cmd_history)

    rollback = commands.add_parser("rollback", help="give 'champion' back to 'previous-champion'")
    rollback.add_argument("--reason", required=True, help="why (recorded in the alias history)")
    rollback.set_defaults(func=cmd_rollback)

    for name, what in (("approve", "make the challenger VERSION champion (four eyes: not by the person who "
                                   "trained it)"),
                       ("reject", "take the challenger alias from VERSION; it stays registered")):
        decide = commands.add_parser(name, help=what)
        decide.add_argument("version", help="the challenger's version number (`finsent history` shows it)")
        decide.add_argument("--reason", required=True, help="why (recorded with your name in the alias history)")
        decide.set_defaults(func=cmd_decide)

    promote = commands.add_parser("promote", help="manual override: make VERSION champion without gates")
    promote.add_argument("version")
    promote.add_argument("--force", action="store_true", help="required: acknowledges that gates are skipped")
    promote.add_argument("--reason", required=True, help="why (recorded in the alias history)")
    promote.set_defaults(func=cmd_promote)

    doctor = commands.add_parser("doctor", help="check the configured MLflow, Prefect and DVC remote: reachable, "
                                               "versions, auth, writable")
    doctor.set_defaults(func=cmd_doctor)

    tune = commands.add_parser(
        "tune", help="search hyper-parameters (params.yaml tune.space) with Optuna on the validation split",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Optuna search (TPE sampler, median pruning) over params.yaml tune.space on data/tokenized,\n"
                    "maximising the best epoch's validation macro-F1; the test split is never read.\n"
                    "The study is kept in .finsent/tune.db: an interrupted tune resumes where it stopped.\n"
                    "Each trial is a nested MLflow run under the study's run 'tune · <study_name>'.",
        epilog="example:\n  finsent tune --trials 30 --timeout-minutes 60 --apply && finsent run")
    tune.add_argument("--trials", type=int, help="finished trials the study should have, earlier runs' "
                                                 "included (default: tune.n_trials)")
    tune.add_argument("--timeout-minutes", type=float, help="start no new trial after this long "
                                                            "(default: tune.timeout_minutes)")
    tune.add_argument("--apply", action="store_true", help="write the best trial's values to params.yaml, "
                                                           "with tune.applied naming study and trial")
    tune.add_argument("--params", default=argparse.SUPPRESS, help="params file (default: params.yaml)")
    tune.set_defaults(func=cmd_tune)
    _explain(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.argv = list(argv) if argv is not None else sys.argv[1:]
    apply_defaults(project_root())
    quiet_libraries()
    try:
        args.func(args)
    except FinsentError as exc:
        message = str(exc)
        if os.environ.get(ERROR_FILE_ENV):  # the flow reports it, once
            Path(os.environ[ERROR_FILE_ENV]).write_text(message)
        else:
            print(f"finsent: error: {message}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("finsent: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # an error finsent did not foresee: still one line, the traceback on request
        if os.environ.get("FINSENT_DEBUG"):
            raise
        print(f"finsent: error: {unforeseen(exc)}", file=sys.stderr)
        return 1
    return 0


def unforeseen(exc: Exception) -> str:
    """One line for an exception that is not a FinsentError: what failed, and how to see more."""
    if isinstance(exc, OSError) and exc.filename:
        return f"{exc.filename}: {exc.strerror or exc}; check the path and its permissions"
    first = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    mlflow_errors = sys.modules.get("mlflow.exceptions")
    if mlflow_errors is not None and isinstance(exc, mlflow_errors.MlflowException):
        from finsent.runtime import redact

        return (f"MLflow ({redact(os.environ.get('MLFLOW_TRACKING_URI', ''))}): {first[:300]}; check "
                f"MLFLOW_TRACKING_URI (`finsent doctor` checks the store)")
    return (f"{type(exc).__name__}: {first[:300]} (unexpected: FINSENT_DEBUG=1 shows the traceback; please report "
            f"it with that output)")


def console() -> None:
    """The `finsent` command (main() is also called in-process, by the flow's stages)."""
    exit_process(main())


if __name__ == "__main__":
    console()
