"""Compare-and-set promotion, alias history, rollback and manual override, against a real
`mlflow server` process on loopback (SQLite backend store, and PostgreSQL where reachable)."""

from __future__ import annotations

import multiprocessing

import pytest
from mlflow import MlflowClient

from finsent.config import RegistryParams
from finsent.errors import FinsentError
from finsent.promotion import (ApprovalRefused, ChampionMoved, alias_version, approve, champion_at, describe_event,
                               history, nominate, promote, record_refusal, reject, rejection, rollback)

from servers import drop_postgres_database, mlflow_server, postgres_database

REGISTRY = RegistryParams(model_name="cas-model")


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory):
    folder = tmp_path_factory.mktemp(f"mlflow-{request.param}")
    if request.param == "sqlite":
        backend, cleanup = f"sqlite:///{folder / 'mlflow.db'}", None
    else:
        backend, why = postgres_database()
        if backend is None:
            pytest.skip(f"PostgreSQL backend test skipped: {why}")
        cleanup = backend
    with mlflow_server(backend, folder / "artifacts") as url:
        yield url
    if cleanup:
        drop_postgres_database(cleanup)


@pytest.fixture()
def versions(server, tmp_path, request):
    """A fresh registered model with four versions (each from its own run; no weights needed for aliases)."""
    client = MlflowClient(server)
    name = f"cas-{request.node.name.split('[')[0][-20:]}-{tmp_path.name[-6:]}".replace("_", "-")
    client.create_registered_model(name)
    experiment = client.get_experiment_by_name("promotion-tests")
    if experiment is None:
        experiment = client.get_experiment(client.create_experiment("promotion-tests"))
    numbers = []
    for _ in range(4):
        run = client.create_run(experiment.experiment_id)
        client.log_text(run.info.run_id, "placeholder", "model/README.txt")
        numbers.append(client.create_model_version(name, source=f"runs:/{run.info.run_id}/model",
                                                   run_id=run.info.run_id).version)
    return client, RegistryParams(model_name=name), [str(n) for n in numbers]


def _race(args) -> str:
    url, params, version = args
    client = MlflowClient(url)
    try:
        promote(client, params, version, expected_champion=None, reason=f"race {version}", run_id=None)
        return "won"
    except ChampionMoved:
        return "refused"


def test_concurrent_promotions_leave_exactly_one_champion(server, versions):
    client, params, numbers = versions
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        outcomes = pool.map(_race, [(server, params, v) for v in numbers])
    assert sorted(outcomes) == ["refused", "refused", "refused", "won"]
    winner = numbers[outcomes.index("won")]
    assert client.get_model_version_by_alias(params.model_name, "champion").version == winner
    events = history(client, params.model_name)
    assert [(e["seq"], e["from_version"], e["to_version"]) for e in events] == [(1, None, winner)]
    assert not any(m.name.endswith("--promotion-lock") for m in client.search_registered_models())


def test_stale_comparison_is_refused_not_overwritten(versions):
    client, params, (v1, v2, v3, _) = versions
    promote(client, params, v1, expected_champion=None, reason="first")
    promote(client, params, v2, expected_champion=v1, reason="better than v1")
    with pytest.raises(ChampionMoved, match=f"moved from v{v1} to v{v2}"):
        promote(client, params, v3, expected_champion=v1, reason="compared against the old champion")
    assert client.get_model_version_by_alias(params.model_name, "champion").version == v2
    assert client.get_model_version_by_alias(params.model_name, "previous-champion").version == v1


def test_a_retried_promote_records_the_move_it_interrupted(versions):
    """A promote that moved the aliases but died before writing its history event (tracking server gone): the
    flow's retry finds the candidate already champion and writes the missing event; a further retry adds none."""
    client, params, (v1, v2, _, _) = versions
    promote(client, params, v1, expected_champion=None, reason="first")
    client.set_registered_model_alias(params.model_name, "previous-champion", v1)  # what the interrupted one did
    client.set_registered_model_alias(params.model_name, "champion", v2)
    event = promote(client, params, v2, expected_champion=v1, reason="gates passed", run_id="r2")
    assert (event["from_version"], event["to_version"], event["run_id"]) == (v1, v2, "r2")
    assert promote(client, params, v2, expected_champion=v1, reason="gates passed") is None
    assert [(e["from_version"], e["to_version"]) for e in history(client, params.model_name)] == [(None, v1), (v1, v2)]


def test_history_rollback_and_manual_override(versions):
    client, params, (v1, v2, v3, v4) = versions
    first = promote(client, params, v1, expected_champion=None, reason="first")
    promote(client, params, v2, expected_champion=v1, reason="better")
    refused = record_refusal(client, params, v4, reason="not promoted: gate failed (macro_f1 0.5 < 0.6)")
    assert (refused["moved"], refused["candidate"], refused["to_version"]) == (False, v4, v2)
    promote(client, params, v3, expected_champion=v2, reason="better again")
    back = rollback(client, params, reason="v3 misbehaves in production")
    assert (back["from_version"], back["to_version"]) == (v3, v2)
    assert client.get_model_version_by_alias(params.model_name, "champion").version == v2
    assert client.get_model_version_by_alias(params.model_name, "previous-champion").version == v1
    manual = promote(client, params, v4, expected_champion=None, force=True, reason="manual override: hotfix",
                     actor="manual (test)")
    assert manual["from_version"] == v2 and manual["actor"] == "manual (test)"
    events = history(client, params.model_name)
    assert [(e["from_version"], e["to_version"], e["moved"]) for e in events] == [
        (None, v1, True), (v1, v2, True), (v2, v2, False), (v2, v3, True), (v3, v2, True), (v2, v4, True)]
    assert events[4]["reason"].startswith("rollback: v3 misbehaves")
    assert champion_at(events, first["time"]) == v1
    assert champion_at(events, "1970-01-01T00:00:00+00:00") is None
    assert champion_at(events, "9999-01-01T00:00:00+00:00") == v4
    description = client.get_registered_model(params.model_name).description  # the registry UI's first view
    assert description.startswith("# Alias history") and all(describe_event(e) in description for e in events)


def test_rollback_without_previous_champion_is_a_clear_error(versions):
    client, params, (v1, *_) = versions
    promote(client, params, v1, expected_champion=None, reason="first")
    with pytest.raises(FinsentError, match="no 'previous-champion' alias"):
        rollback(client, params, reason="nothing to go back to")


def test_four_eyes_approval_and_rejection(versions):
    """A challenger waits for a second person: its trainer cannot approve it, someone else can (the same
    compare-and-set as the flow's promotion); a rejected challenger loses the alias and stays registered."""
    client, params, (v1, v2, v3, _) = versions
    promote(client, params, v1, expected_champion=None, reason="first")
    nominate(client, params, v2, compared_with=v1, reason="gates passed; awaiting approval", trained_by="alice")
    assert nominate(client, params, v2, compared_with=v1, reason="re-run", trained_by="alice") is None
    assert alias_version(client, params.model_name, "challenger") == v2
    with pytest.raises(ApprovalRefused, match=f"alice trained v{v2}, and approval needs a second person"):
        approve(client, params, v2, approver="alice", reason="looks good to me")
    assert alias_version(client, params.model_name, "champion") == v1
    approved = approve(client, params, v2, approver="bob", reason="validated on Q3 news")
    assert (approved["from_version"], approved["to_version"], approved["actor"]) == (v1, v2, "bob")
    assert approved["reason"] == "approved: validated on Q3 news (trained by alice)"
    assert alias_version(client, params.model_name, "previous-champion") == v1
    assert alias_version(client, params.model_name, "challenger") is None
    with pytest.raises(ApprovalRefused, match=f"v{v2} of '{params.model_name}' awaits no approval"):
        approve(client, params, v2, approver="carol", reason="again")

    nominate(client, params, v3, compared_with=v2, reason="gates passed; awaiting approval", trained_by="alice")
    reject(client, params, v3, actor="bob", reason="misreads guidance cuts")
    assert rejection(client, params, v3)["by"] == "bob"
    assert alias_version(client, params.model_name, "challenger") is None
    assert alias_version(client, params.model_name, "champion") == v2
    assert [(e["alias"], e["from_version"], e["to_version"], e["actor"]) for e in history(client, params.model_name)] \
        == [("champion", None, v1, "flow"), ("challenger", None, v2, "alice"), ("champion", v1, v2, "bob"),
            ("challenger", None, v3, "alice"), ("challenger", v3, None, "bob")]


def test_an_approval_after_the_champion_moved_is_refused(versions):
    client, params, (v1, v2, v3, _) = versions
    promote(client, params, v1, expected_champion=None, reason="first")
    nominate(client, params, v2, compared_with=v1, reason="gates passed; awaiting approval", trained_by="alice")
    promote(client, params, v3, expected_champion=v1, reason="another run, meanwhile")
    with pytest.raises(ChampionMoved, match=f"moved from v{v1} to v{v3}"):
        approve(client, params, v2, approver="bob", reason="validated")
    assert alias_version(client, params.model_name, "champion") == v3
    assert alias_version(client, params.model_name, "challenger") == v2


def test_long_descriptions_fit_mlflow_and_say_where_the_rest_is():
    """SQL stores keep descriptions in VARCHAR(5000): the history keeps its newest decisions and counts the
    others; any other text is cut at a line end and names where the whole of it is."""
    from finsent.mlflow_limits import DESCRIPTION_LIMIT, fitted
    from finsent.promotion import history_description

    lines = [f"#{seq:<3} 2026-12-03T10:00:00.000+00:00  champion: v{seq - 1} -> v{seq}  by flow  reason: "
             + "gates passed " * 8 for seq in range(1, 61)]
    text = history_description(lines)
    assert len(text) <= DESCRIPTION_LIMIT and text.endswith("```\n") and lines[-1] in text and lines[0] not in text
    earlier = int(text.split("\n\n")[1].split()[0])
    assert f"{earlier} earlier decisions: `finsent history`" in text and lines[earlier] in text
    assert history_description(lines[:3]).count("#") == 4  # heading + 3 decisions, nothing cut
    card = "\n".join(f"| row {i} | {'x' * 80} |" for i in range(200))
    cut = fitted(card, DESCRIPTION_LIMIT, "the artifact reports/model_card.md")
    assert len(cut) <= DESCRIPTION_LIMIT and cut.startswith("| row 0 |")
    assert cut.rstrip().endswith("the whole text: the artifact reports/model_card.md)")
    assert fitted("short", DESCRIPTION_LIMIT, "x") == "short"
