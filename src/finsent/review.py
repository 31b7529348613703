"""Four eyes in the Prefect UI: a training flow whose candidate became the challenger can pause and wait for a
reviewer's decision, entered in the flow run's Resume form, instead of a later `finsent approve` / `reject`.

The decision goes through the same ``approve`` / ``reject`` as the CLI (compare-and-set, the trainer may not
approve). Prefect's open-source server has no user accounts: the form's reviewer name is what is recorded, so
where identity must be enforced, decide with the CLI (``FINSENT_ACTOR`` set by your identity system) or put the
server behind authentication. No decision within ``gate.approval_wait_minutes``: the candidate stays challenger
and the flow completes.
"""

from __future__ import annotations

from prefect.input import RunInput
from pydantic import Field

from finsent.config import Params
from finsent.errors import FinsentError
from finsent.release import AWAITING_APPROVAL, PROMOTED, PROMOTION_TAG, REFUSED, Promotion

POLL_SECONDS = 5


class ReviewDecision(RunInput):
    """The Resume form of a paused training flow run."""

    approve: bool = Field(description="true: make the challenger champion; false: reject it")
    reviewer: str = Field(min_length=1, description="your name, as recorded in the alias history (not the "
                                                    "person who trained the model)")
    reason: str = Field(min_length=1, description="why: recorded in the alias history")


def _keep_running() -> None:
    """A pause that timed out leaves the flow run Paused, and Prefect would end it Failed ('never resumed'):
    mark it Running again, since the run did its job (the candidate is registered and waits as challenger)."""
    from prefect import get_client
    from prefect.context import FlowRunContext
    from prefect.states import Running

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(FlowRunContext.get().flow_run.id,
                                  Running(message="no review decision in time: the candidate stays challenger"),
                                  force=True)


def wait_for_review(params: Params, registration: dict, promotion: Promotion) -> Promotion:
    """Pause this flow run (call it from the flow) until a reviewer decides on the challenger -> the outcome."""
    from mlflow import MlflowClient
    from prefect.exceptions import FlowPauseTimeout
    from prefect.flow_runs import pause_flow_run

    from finsent.promotion import approve, reject

    registry, version = params.registry, registration["version"]
    minutes = params.gate.approval_wait_minutes
    print(f"  approval: waiting up to {minutes:g} min for a review of v{version} (Prefect UI: this flow run, "
          f"Resume)", flush=True)
    form = ReviewDecision.with_initial_data(
        description=f"Approve {registry.model_name} v{version} as {registry.champion_alias}? Its evaluation "
                    f"report is this run's artifact 'finsent-evaluation-report'.", approve=False)
    try:
        decision = pause_flow_run(wait_for_input=form, timeout=max(1, round(minutes * 60)), poll_interval=POLL_SECONDS)
    except FlowPauseTimeout:
        _keep_running()
        return Promotion(AWAITING_APPROVAL, f"{promotion.decision}; no review in the Prefect UI within {minutes:g} "
                                            f"min, so v{version} stays {registry.challenger_alias}")
    client = MlflowClient()
    try:
        if decision.approve:
            event = approve(client, registry, version, approver=decision.reviewer, reason=decision.reason)
        else:
            reject(client, registry, version, actor=decision.reviewer, reason=decision.reason)
    except FinsentError as exc:  # the reviewer trained it, or the champion moved: nothing moved
        return Promotion(AWAITING_APPROVAL, f"{promotion.decision}; the review was not applied: {exc}")
    if not decision.approve:
        outcome = f"refused: rejected by {decision.reviewer} ({decision.reason}); v{version} registered without alias"
        client.set_model_version_tag(registry.model_name, version, PROMOTION_TAG, outcome)
        return Promotion(REFUSED, outcome)
    client.set_model_version_tag(registry.model_name, version, PROMOTION_TAG,
                                 f"promoted (approved by {decision.reviewer}, history #{event['seq']})")
    return Promotion(PROMOTED, f"promoted v{version} to {registry.champion_alias}, approved by {decision.reviewer}"
                               + (f"; v{event['from_version']} is now {registry.previous_alias}"
                                  if event["from_version"] else ""), event["from_version"])
