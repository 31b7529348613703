"""What happens to a trained candidate after the stages: gate, register, check servable, promote
(compare-and-set), report.

Plain functions with typed results; the training flow only calls them in order and passes the results on.
A candidate ends in exactly one ``Promotion.outcome``: promoted, already champion, awaiting approval (it is the
challenger: ``gate.require_approval``), gate failed, or refused (not servable as registered, the champion moved
after the comparison, no promotion slot came free, or a person rejected this model before); only "gate failed" is
a gate failure.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass
from pathlib import Path

from finsent import layout, servability
from finsent.config import Params
from finsent.errors import FinsentError, GateFailed
from finsent.evaluate.gates import describe, gate
from finsent.evaluate.report import evaluation_report
from finsent.local_api import server_configured
from finsent.mlflow_limits import DESCRIPTION_LIMIT, TAG_LIMIT, fitted
from finsent.promotion import (ChampionMoved, acting_person, alias_version, nominate, promote, record_refusal,
                               rejection)
from finsent.registry import get_or_register
from finsent.servability import Servability
from finsent.versioning import code_revision, lock_text

PROMOTED, ALREADY_CHAMPION, GATE_FAILED, REFUSED = "promoted", "already champion", "gate failed", "refused"
AWAITING_APPROVAL = "awaiting approval"
PROMOTION_TAG = "finsent.promotion"
PROMOTION_LIMIT = "finsent-promotion"  # Prefect global concurrency limit: promotions at a time
SERVABILITY_TAG = "finsent.servability"


@dataclass(frozen=True)
class Promotion:
    outcome: str  # PROMOTED | ALREADY_CHAMPION | AWAITING_APPROVAL | GATE_FAILED | REFUSED
    decision: str  # the sentence the report, the tag and the CLI show
    previous_champion: str | None = None

    @property
    def promoted(self) -> bool:
        return self.outcome == PROMOTED

    def raise_unless_champion(self, version: str, alias: str) -> None:
        """The CLI's exit status: a failed gate and a refused promotion are errors, each its own."""
        if self.outcome == GATE_FAILED:
            raise GateFailed(f"{self.decision.removeprefix('not promoted: ')}: version {version} registered without "
                             f"alias '{alias}'")
        if self.outcome == REFUSED:
            raise PromotionRefused(self.decision)


class PromotionRefused(FinsentError):
    """The gates passed but the alias was not moved (the champion moved meanwhile, or no promotion slot)."""

    exit_code = 1


def _read(root: Path, path: str) -> dict:
    return json.loads((root / path).read_text())


def compare_with_champion(root: Path, params: Params, state: dict) -> dict:
    """Score the champion on the candidate's test rows and compare (nothing to compare: no champion yet, or the
    candidate is the champion)."""
    import tempfile

    from finsent.evaluate.compare import compare
    from finsent.registry import champion_bundle

    champion = state["champion"]
    predictions, test = root / layout.TEST_PREDICTIONS, root / layout.TEST_SPLIT
    if champion is None or champion == state["existing_version"]:
        return compare(predictions, test, None, None, root / layout.COMPARISON)
    with tempfile.TemporaryDirectory() as scratch:
        return compare(predictions, test, champion_bundle(params.registry, champion, Path(scratch)), champion,
                       root / layout.COMPARISON, slice_by=tuple(params.eval.slice_by))


def gate_candidate(root: Path, params: Params) -> dict:
    """The gate verdict on the evaluation and the comparison; writes the gate report and the evaluation report."""
    verdict = gate(root / layout.METRICS, root / layout.COMPARISON, params.gate, params.labels,
                   root / layout.GATE_REPORT)
    write_report(root, params, verdict)
    return verdict


def write_report(root: Path, params: Params, verdict: dict, promotion: Promotion | None = None) -> str:
    slices = _read(root, layout.SLICE_METRICS) if (root / layout.SLICE_METRICS).is_file() else {}
    report = evaluation_report(_read(root, layout.METRICS), _read(root, layout.COMPARISON), verdict, params.labels,
                               slices, **({"decision": promotion.decision} if promotion else {}))
    (root / layout.EVAL_REPORT_MD).write_text(report)
    return report


def register_candidate(root: Path, params: Params, state: dict, verdict: dict, flow_run_id: str) -> dict:
    """Log the candidate into the flow's MLflow run and register the adapter (or find the version already
    registered for it), with its lineage."""
    lineage = {"code": code_revision(root), "dvc_lock": lock_text(root),
               "base_model": _read(root, layout.TRAIN_REPORT)["base_model"],
               "validation": _read(root, layout.VALIDATION_REPORT)["accounting"],
               "drift": _read(root, layout.DRIFT_REPORT), "gate": verdict}
    return get_or_register(root, params, state, verdict, lineage, flow_run_id)


def promote_candidate(params: Params, registration: dict, verdict: dict, compared_with: str | None) -> Promotion:
    """Compare-and-set: promote only if the champion is still the one this candidate was compared with."""
    from mlflow import MlflowClient

    registry = params.registry
    client = MlflowClient()
    version = registration["version"]
    if not verdict["passed"]:
        decision = f"not promoted: gate failed ({describe(verdict, failed_only=True)})"
        client.set_model_version_tag(registry.model_name, version, PROMOTION_TAG, decision)
        if registration["new_version"]:  # one refusal per candidate, not one per unchanged re-run
            record_refusal(client, registry, version, decision, registration["run_id"], describe(verdict))
        return Promotion(GATE_FAILED, decision)
    reason = "gates passed" + (f" against champion v{compared_with}" if compared_with else
                               " (first champion: absolute gates only)")
    if params.gate.require_approval and alias_version(client, registry.model_name, registry.champion_alias) != version:
        return nominate_candidate(params, registration, verdict, compared_with, reason)
    try:
        event = promote(client, registry, version, expected_champion=compared_with, run_id=registration["run_id"],
                        reason=reason, gate=describe(verdict))
    except ChampionMoved as exc:
        return refuse(params, registration, verdict, f"refused: {exc}")
    if event is None:
        return Promotion(ALREADY_CHAMPION, f"v{version} already is champion")
    client.set_model_version_tag(registry.model_name, version, PROMOTION_TAG, f"promoted (history #{event['seq']})")
    return Promotion(PROMOTED, f"promoted v{version} to {registry.champion_alias}"
                               + (f"; v{event['from_version']} is now {registry.previous_alias}"
                                  if event["from_version"] else ""), event["from_version"])


def nominate_candidate(params: Params, registration: dict, verdict: dict, compared_with: str | None,
                       reason: str) -> Promotion:
    """Four eyes: the candidate becomes the challenger, recorded as trained by this run's person; a model a person
    rejected is not nominated again by a re-run."""
    from mlflow import MlflowClient

    registry, version = params.registry, registration["version"]
    client = MlflowClient()
    rejected = rejection(client, registry, version)
    if rejected:
        return refuse(params, registration, verdict, f"refused: v{version} was rejected by {rejected['by']} "
                                                     f"({rejected['reason']}); a re-run does not nominate it again")
    nominate(client, registry, version, compared_with=compared_with, trained_by=acting_person(),
             reason=f"{reason}; awaiting approval", run_id=registration["run_id"], gate=describe(verdict))
    decision = (f"awaiting approval: v{version} is {registry.challenger_alias}; another person runs "
                f"`finsent approve {version} --reason ...` (or `finsent reject`)")
    client.set_model_version_tag(registry.model_name, version, PROMOTION_TAG, decision)
    return Promotion(AWAITING_APPROVAL, decision)


def promotion_slot(schedule):
    """A slot of the global concurrency limit PROMOTION_LIMIT (a context manager), the limit created with
    ``schedule.concurrency_limit`` slots when missing: Prefect 3 skips a limit that does not exist with only a
    warning. Works on any Prefect API, the embedded ephemeral one of `finsent run` included."""
    from prefect import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitCreate
    from prefect.client.schemas.objects import ConcurrencyLeaseHolder
    from prefect.concurrency.sync import concurrency
    from prefect.context import FlowRunContext
    from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_global_concurrency_limit_by_name(PROMOTION_LIMIT)
        except ObjectNotFound:
            try:
                client.create_global_concurrency_limit(
                    GlobalConcurrencyLimitCreate(name=PROMOTION_LIMIT, limit=schedule.concurrency_limit))
            except ObjectAlreadyExists:  # another run created it meanwhile
                pass
    context = FlowRunContext.get()
    holder = (ConcurrencyLeaseHolder(type="flow_run", id=context.flow_run.id)
              if context is not None and context.flow_run is not None else None)
    return concurrency(PROMOTION_LIMIT, occupy=1, timeout_seconds=schedule.promotion_timeout_seconds, holder=holder)


def servability_checked(params: Params, verdict: dict, state: dict) -> bool:
    """Whether the candidate is loaded in a fresh process before an alias moves (known before it is registered):
    it passed its gates, ``gate.servability_check`` is on, and it is not the champion's own version (what an
    unchanged re-run registers again)."""
    return bool(verdict["passed"] and params.gate.servability_check
                and (state["existing_version"] is None or state["existing_version"] != state["champion"]))


def check_servable(root: Path, params: Params, registration: dict) -> Servability:
    """The registered version loaded from the registry in a fresh process must reproduce the evaluation; the
    finding is tagged on the version."""
    from mlflow import MlflowClient

    name, version = registration["model_name"], registration["version"]
    expected = root / layout.SERVED_PREDICTIONS  # the chosen backend's (ONNX INT8 differs from torch a little)
    if not expected.is_file():
        expected = root / layout.TEST_PREDICTIONS
    served = servability.check(f"models:/{name}/{version}", root / layout.TEST_SPLIT, expected,
                               params.gate.servability_tolerance)
    MlflowClient().set_model_version_tag(name, version, SERVABILITY_TAG,
                                         f"{'passed' if served.passed else 'FAILED'}: {served.reason}")
    return served


def promote_in_turn(root: Path, params: Params, registration: dict, verdict: dict, state: dict,
                    comparison: dict) -> Promotion:
    """A candidate that passed its gates is first checked servable (``check_servable``, when
    ``gate.servability_check``; not again for the champion itself); then one promotion at a time
    (``promotion_slot`` on a configured Prefect server; the registry's compare-and-set stays the second guard)
    and ``promote_candidate`` against the champion this candidate was compared with. Not servable, or no slot
    within ``schedule.promotion_timeout_seconds``: refused, registered without alias.

    With the local API of `finsent run` no slot is taken: only this project's runs use its database, and the
    project's run lock already lets one run at a time (runs of other projects that share the registry meet
    at its compare-and-set). Taking one there only cost API calls, and a 2 s retry whenever the API's SQLite
    database was busy."""
    from prefect.concurrency.asyncio import AcquireConcurrencySlotTimeoutError

    if servability_checked(params, verdict, state):
        served = check_servable(root, params, registration)
        if not served.passed:
            return refuse(params, registration, verdict, f"refused: servability check failed: {served.reason}; "
                                                         f"v{registration['version']} registered without alias")

    compared_with = comparison["champion_version"] or (
        state["champion"] if state["champion"] == state["existing_version"] else None)
    schedule = params.schedule
    try:
        with promotion_slot(schedule) if server_configured() else contextlib.nullcontext():
            return promote_candidate(params, registration, verdict, compared_with)
    except AcquireConcurrencySlotTimeoutError:
        return refuse(params, registration, verdict,
                      f"refused: no '{PROMOTION_LIMIT}' slot within {schedule.promotion_timeout_seconds} s "
                      f"(another run is promoting, or a killed one left its slot taken: "
                      f"prefect gcl update {PROMOTION_LIMIT} --active-slots 0); "
                      f"v{registration['version']} registered without alias")


def refuse(params: Params, registration: dict, verdict: dict, decision: str) -> Promotion:
    """A candidate that passed its gates but whose promotion was refused: tagged and recorded in the history."""
    from mlflow import MlflowClient

    client = MlflowClient()
    client.set_model_version_tag(params.registry.model_name, registration["version"], PROMOTION_TAG, decision)
    record_refusal(client, params.registry, registration["version"], decision, registration["run_id"],
                   describe(verdict))
    return Promotion(REFUSED, decision)


def publish_report(root: Path, params: Params, registration: dict, verdict: dict, promotion: Promotion,
                   flow_run_id: str) -> str:
    """The evaluation report with the decision (logged to the flow's MLflow run as a file and as its description)
    and the model card around it (logged beside it, Markdown and HTML, and set as the model version's
    description when the version is new or was just promoted: an unchanged re-run keeps the card that
    recorded its decision) -> the report."""
    from mlflow import MlflowClient

    from finsent.evaluate.card import model_card, write_card

    report = write_report(root, params, verdict, promotion)
    card = write_card(root, model_card(root, registration["model_name"], registration["version"], params.labels,
                                       report))
    client = MlflowClient()
    client.log_text(flow_run_id, report, layout.EVAL_REPORT_MD)
    for file in (card, card.with_suffix(".html")):
        client.log_artifact(flow_run_id, str(file), layout.REPORTS_DIR)
    client.set_tag(flow_run_id, "mlflow.note.content",  # the run's description in the MLflow UI
                   fitted(report, TAG_LIMIT, f"this run's artifact {layout.EVAL_REPORT_MD}"))
    if registration["new_version"] or promotion.promoted:
        client.update_model_version(registration["model_name"], registration["version"], description=fitted(
            card.read_text(), DESCRIPTION_LIMIT, f"the artifact {layout.MODEL_CARD} of run {registration['run_id']}"))
    return report
