"""Moving the `champion` alias safely, and remembering every move.

MLflow has no compare-and-set on aliases, so promotion takes a registry-wide lock first: a
registered model named ``<model>--promotion-lock`` whose creation is atomic in every MLflow
backend (unique name). Under the lock the champion is re-read; if it is no longer the version
the candidate was compared against, the promotion is refused instead of overwriting it.
Every alias move is appended to the model's alias history (registered-model tags
``finsent.history.NNNNNN``, JSON), which answers "what was in production at time X"; so is every
refusal to promote a candidate (``moved: false``), so each decision can be explained later.
With ``gate.require_approval`` a candidate that passes its gates becomes ``challenger`` (``nominate``) and a
second person moves it on (``approve``, the same compare-and-set) or off (``reject``).
"""

from __future__ import annotations

import json
import os
import random
import socket
import time
import uuid
from contextlib import contextmanager
from datetime import datetime, timezone

import mlflow
from mlflow import MlflowClient
from mlflow.exceptions import MlflowException

from finsent.config import RegistryParams
from finsent.errors import FinsentError

LOCK_SUFFIX = "--promotion-lock"
HISTORY_PREFIX = "finsent.history."
HISTORY_HEADING = "# Alias history (finsent history)"
TRAINED_BY_TAG = "finsent.trained_by"  # version tags written when a candidate becomes challenger
COMPARED_WITH_TAG = "finsent.compared_with"
REJECTED_TAG = "finsent.rejected"


class ChampionMoved(FinsentError):
    """Another run moved `champion` after this candidate was compared; nothing was overwritten."""

    exit_code = 1


class ApprovalRefused(FinsentError):
    """An approval or rejection that may not happen (the approver trained the model, or it awaits none)."""

    exit_code = 1


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def _already_exists(exc: MlflowException) -> bool:
    return exc.error_code in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS") or "already exists" in str(exc).lower()


@contextmanager
def promotion_lock(client: MlflowClient, model_name: str, wait_s: float = 120.0, stale_after_s: float = 600.0):
    """Hold the registry-wide promotion lock of ``model_name`` (waits up to ``wait_s``)."""
    name = model_name + LOCK_SUFFIX
    owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
    deadline = time.monotonic() + wait_s
    while True:
        try:
            client.create_registered_model(name, tags={"owner": owner, "acquired_at": str(time.time())},
                                           description="finsent promotion lock: exists only while an alias moves")
            break
        except MlflowException as exc:
            if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
                # SQL stores answer a unique-name clash by reading the existing row; when its holder
                # released the lock between the two, the clash surfaces as "not found": try again.
                continue
            if not _already_exists(exc):
                raise
            try:
                holder = client.get_registered_model(name).tags
                if holder.get("owner") == owner:  # our create succeeded; the client's retry saw it exist
                    break
                if time.time() - float(holder.get("acquired_at", time.time())) > stale_after_s:
                    client.delete_registered_model(name)  # a crashed holder; the next create decides
                    continue
            except MlflowException:
                continue  # released meanwhile
            if time.monotonic() > deadline:
                raise FinsentError(f"promotion lock of '{model_name}' held by {holder.get('owner')} for more than "
                                   f"{wait_s:.0f}s; retry later or delete registered model '{name}' if it is stale"
                                   ) from exc
            time.sleep(0.05 + random.random() * 0.2)
    try:
        yield
    finally:
        try:
            client.delete_registered_model(name)
        except MlflowException as exc:  # a retried delete whose first attempt already succeeded
            if "not found" not in str(exc).lower() and "does not exist" not in str(exc).lower():
                raise


def alias_version(client: MlflowClient, model_name: str, alias: str) -> str | None:
    try:
        return str(client.get_model_version_by_alias(model_name, alias).version)
    except MlflowException:
        return None


def history(client: MlflowClient, model_name: str) -> list[dict]:
    """The recorded alias decisions, oldest first; [] only when the model is not registered yet (a store that
    cannot be read is an error, never an empty history: the writer appends by sequence number)."""
    try:
        tags = client.get_registered_model(model_name).tags
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return []
        from finsent.runtime import redact

        raise FinsentError(f"cannot read the alias history of '{model_name}' from "
                           f"{redact(mlflow.get_tracking_uri())}: {str(exc).splitlines()[0][:200]} "
                           f"(`finsent doctor` checks the store)") from exc
    return [json.loads(tags[key]) for key in sorted(k for k in tags if k.startswith(HISTORY_PREFIX))]


def describe_event(e: dict) -> str:
    """One decision as a line: `finsent history` prints these, the registered model's description lists them."""
    def v(version):
        return f"v{version}" if version else "-"

    change = (f"{v(e['from_version'])} -> {v(e['to_version'])}" if e.get("moved", True)
              else f"v{e['candidate']} NOT promoted (stays {v(e['to_version']) if e['to_version'] else 'none'})")
    return (f"#{e['seq']:<3} {e['time']}  {e['alias']}: {change}  by {e['actor']}  run {e.get('run_id') or '-'}"
            f"  reason: {e['reason']}" + (f"  gates: {e['gate']}" if e.get("gate") and e.get("moved", True) else ""))


def _record(client: MlflowClient, model_name: str, moved: bool = True, **event) -> dict:
    """Append one decision to the history (call under the promotion lock: the sequence number is read here), and
    show the whole history as the registered model's description (what the MLflow registry UI shows first)."""
    events = history(client, model_name)
    event = {"seq": (events[-1]["seq"] + 1) if events else 1, "time": _now(), "moved": moved, **event}
    client.set_registered_model_tag(model_name, f"{HISTORY_PREFIX}{event['seq']:06d}", json.dumps(event))
    client.update_registered_model(model_name,
                                   description=history_description([describe_event(e) for e in [*events, event]]))
    return event


def history_description(lines: list[str]) -> str:
    """The history as the registered model's description: the newest decisions that fit MLflow's description
    limit, and how many earlier ones `finsent history` shows."""
    from finsent.mlflow_limits import DESCRIPTION_LIMIT, fitted

    shown = list(lines)
    while True:
        earlier = len(lines) - len(shown)
        text = (f"{HISTORY_HEADING}\n\n" + (f"{earlier} earlier decisions: `finsent history`\n\n" if earlier else "")
                + "```\n" + "\n".join(shown) + "\n```\n")
        if len(text) <= DESCRIPTION_LIMIT or len(shown) <= 1:
            return fitted(text, DESCRIPTION_LIMIT, "`finsent history`")
        shown.pop(0)


def _move(client: MlflowClient, params: RegistryParams, alias: str, version: str | None) -> None:
    if version is None:
        try:
            client.delete_registered_model_alias(params.model_name, alias)
        except MlflowException:
            pass
    else:
        client.set_registered_model_alias(params.model_name, alias, version)


def promote(client: MlflowClient, params: RegistryParams, version: str, *, expected_champion: str | None,
            reason: str, run_id: str | None = None, gate: str | None = None, actor: str = "flow",
            force: bool = False) -> dict | None:
    """Compare-and-set: make ``version`` champion if the champion is still ``expected_champion``.

    Returns the history event, or None when ``version`` already is champion.
    """
    with promotion_lock(client, params.model_name):
        return _make_champion(client, params, str(version), expected_champion, reason, run_id, gate, actor, force)


def _make_champion(client: MlflowClient, params: RegistryParams, version: str, expected_champion: str | None,
                   reason: str, run_id: str | None, gate: str | None, actor: str, force: bool = False) -> dict | None:
    """``promote`` under the promotion lock (the caller holds it)."""
    current = alias_version(client, params.model_name, params.champion_alias)
    if current == version:
        last = next((e for e in reversed(history(client, params.model_name))
                     if e["alias"] == params.champion_alias and e.get("moved", True)), None)
        if last is not None and last["to_version"] == version:
            return None
        # a retry of a promote that moved the alias but failed before recording it: record it now
        return _record(client, params.model_name, alias=params.champion_alias,
                       from_version=alias_version(client, params.model_name, params.previous_alias),
                       to_version=version, run_id=run_id, actor=actor, reason=reason, gate=gate)
    if current != expected_champion and not force:
        raise ChampionMoved(f"champion of '{params.model_name}' moved from "
                            f"{'v' + expected_champion if expected_champion else 'none'} to v{current} after this "
                            f"candidate (v{version}) was compared; not promoting: re-run to compare against v{current}")
    if current is not None:
        _move(client, params, params.previous_alias, current)
    _move(client, params, params.champion_alias, version)
    return _record(client, params.model_name, alias=params.champion_alias, from_version=current,
                   to_version=version, run_id=run_id, actor=actor, reason=reason, gate=gate)


def acting_person() -> str:
    """Who is acting, for the four-eyes rule: ``FINSENT_ACTOR`` (set it where many people share one OS account,
    or to a CI identity), else the OS user."""
    import getpass

    try:
        return os.environ.get("FINSENT_ACTOR") or getpass.getuser()
    except (KeyError, OSError):  # no user name for this uid (some containers)
        return "unknown"


def rejection(client: MlflowClient, params: RegistryParams, version: str) -> dict | None:
    """The recorded rejection of ``version`` (who, when, why), if someone rejected it."""
    recorded = client.get_model_version(params.model_name, str(version)).tags.get(REJECTED_TAG)
    return json.loads(recorded) if recorded else None


def nominate(client: MlflowClient, params: RegistryParams, version: str, *, compared_with: str | None, reason: str,
             trained_by: str, run_id: str | None = None, gate: str | None = None) -> dict | None:
    """Make a candidate that passed its gates the challenger: it waits for a second person's ``approve``. The
    version records who trained it and which champion it was compared with (the approval's compare-and-set).
    Returns the history event, or None when it already is the challenger."""
    version = str(version)
    with promotion_lock(client, params.model_name):
        client.set_model_version_tag(params.model_name, version, TRAINED_BY_TAG, trained_by)
        client.set_model_version_tag(params.model_name, version, COMPARED_WITH_TAG, compared_with or "")
        current = alias_version(client, params.model_name, params.challenger_alias)
        if current == version:
            return None
        _move(client, params, params.challenger_alias, version)
        return _record(client, params.model_name, alias=params.challenger_alias, from_version=current,
                       to_version=version, run_id=run_id, actor=trained_by, reason=reason, gate=gate)


def _awaiting(client: MlflowClient, params: RegistryParams, version: str):
    """The challenger version ``version`` (the caller holds the lock); an error when it is not the challenger."""
    current = alias_version(client, params.model_name, params.challenger_alias)
    if current != version:
        raise ApprovalRefused(f"v{version} of '{params.model_name}' awaits no approval: the {params.challenger_alias} "
                              f"is {'v' + current if current else 'none'} (`finsent history` shows the decisions)")
    return client.get_model_version(params.model_name, version)


def approve(client: MlflowClient, params: RegistryParams, version: str, *, approver: str, reason: str) -> dict:
    """The second pair of eyes: the challenger becomes champion by the same compare-and-set as the flow's
    promotion, against the champion it was compared with. Refused when ``approver`` trained it or when the
    champion moved since the comparison; either way nothing moves."""
    version = str(version)
    with promotion_lock(client, params.model_name):
        candidate = _awaiting(client, params, version)
        trained_by = candidate.tags.get(TRAINED_BY_TAG)
        if trained_by == approver:
            raise ApprovalRefused(f"approval refused: {approver} trained v{version}, and approval needs a second "
                                  f"person (four eyes); someone else runs `finsent approve {version}`")
        event = _make_champion(client, params, version, candidate.tags.get(COMPARED_WITH_TAG) or None,
                               f"approved: {reason} (trained by {trained_by})", candidate.run_id, None, approver)
        _move(client, params, params.challenger_alias, None)
    return event


def reject(client: MlflowClient, params: RegistryParams, version: str, *, actor: str, reason: str) -> dict:
    """The challenger loses its alias and stays registered; the rejection is recorded on the version (a re-run of
    the same model does not nominate it again) and in the history."""
    version = str(version)
    with promotion_lock(client, params.model_name):
        candidate = _awaiting(client, params, version)
        _move(client, params, params.challenger_alias, None)
        event = _record(client, params.model_name, alias=params.challenger_alias, from_version=version,
                        to_version=None, run_id=candidate.run_id, actor=actor, reason=f"rejected: {reason}", gate=None)
        client.set_model_version_tag(params.model_name, version, REJECTED_TAG,
                                     json.dumps({"by": actor, "time": event["time"], "reason": reason}))
    return event


def rollback(client: MlflowClient, params: RegistryParams, reason: str, actor: str = "manual") -> dict:
    """Give `champion` back to `previous-champion`; the alias before that becomes previous again."""
    with promotion_lock(client, params.model_name):
        current = alias_version(client, params.model_name, params.champion_alias)
        previous = alias_version(client, params.model_name, params.previous_alias)
        if previous is None:
            raise FinsentError(f"'{params.model_name}' has no '{params.previous_alias}' alias: nothing to roll back to")
        before = next((e["from_version"] for e in reversed(history(client, params.model_name))
                       if e["alias"] == params.champion_alias and e["to_version"] == previous and e.get("moved", True)), None)
        _move(client, params, params.champion_alias, previous)
        _move(client, params, params.previous_alias, before if before not in (current, previous) else None)
        return _record(client, params.model_name, alias=params.champion_alias, from_version=current,
                       to_version=previous, run_id=None, actor=actor, reason=f"rollback: {reason}", gate=None)


def record_refusal(client: MlflowClient, params: RegistryParams, version: str, reason: str,
                   run_id: str | None = None, gate: str | None = None) -> dict:
    """Record that ``version`` was not made champion, and why; the champion stays where it is."""
    with promotion_lock(client, params.model_name):
        current = alias_version(client, params.model_name, params.champion_alias)
        return _record(client, params.model_name, moved=False, alias=params.champion_alias, from_version=current,
                       to_version=current, candidate=str(version), run_id=run_id, actor="flow", reason=reason,
                       gate=gate)


def champion_at(events: list[dict], when: str, alias: str = "champion") -> str | None:
    """The version that held ``alias`` at ISO time ``when`` (None if none did)."""
    holder = None
    for event in events:
        if event["alias"] == alias and event.get("moved", True) and event["time"] <= when:
            holder = event["to_version"]
    return holder
