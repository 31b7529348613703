"""Model-risk governance end to end, on the bundled MiniLM and two sources cut from the sample: four-eyes approval
(challenger, approve, reject), shadow scoring of the challenger by the monitor, and the per-slice gate refusing a
candidate trained on one source's labels made noisy by this test."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pandas as pd
import pytest

from projects import GATES_OFF, REPO, finsent, make_project, set_params

pytestmark = pytest.mark.e2e
ALICE, BOB, CAROL = ({"FINSENT_ACTOR": name} for name in ("alice", "bob", "carol"))
NOT_SLICES = "gate.max_slice_macro_f1_drop=null"  # runs that test approval, not the slice gate


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    """Sources wire.csv and blogs.csv (25 rows per label each); approval required; relative gates opened except
    the slice gate, so a reseeded candidate on 150 rows is judged by the mechanics under test, not by chance."""
    root = make_project(tmp_path_factory.mktemp("governance") / "project", 50, train={"epochs": 3},
                        eval={"slice_by": ["source"]},
                        gate={**GATES_OFF, "require_approval": True, "servability_check": False,
                              "max_macro_f1_drop": 1.0, "max_class_recall_drop": 1.0,
                              "max_slice_macro_f1_drop": 0.15, "min_slice_rows": 10})
    rows = pd.read_csv(root / "data" / "slice.csv")
    first = rows.groupby("label").cumcount() < 25
    rows[first].to_csv(root / "data" / "wire.csv", index=False)
    rows[~first].to_csv(root / "data" / "blogs.csv", index=False)
    set_params(root, data={"sources": ["data/wire.csv", "data/blogs.csv"]})
    return root


@pytest.fixture(scope="module")
def approved(project):
    """v1 trained by alice: challenger; alice's own approval refused; bob's approval makes it champion."""
    trained = finsent(project, "run", **ALICE)
    own = finsent(project, "approve", "1", "--reason", "my model looks fine", **ALICE)
    second = finsent(project, "approve", "1", "--reason", "validated on Q3 news", **BOB)
    return trained, own, second


def test_a_passing_candidate_waits_as_challenger_for_a_second_person(project, approved):
    trained, own, second = approved
    assert trained.returncode == 0, trained.stdout + trained.stderr
    assert "version 1 [challenger] (new version)" in trained.stdout
    assert "decision: awaiting approval: v1 is challenger; another person runs `finsent approve 1" in trained.stdout
    assert own.returncode == 1 and own.stdout == ""
    assert own.stderr == ("finsent: error: approval refused: alice trained v1, and approval needs a second person "
                          "(four eyes); someone else runs `finsent approve 1`\n")
    assert second.returncode == 0, second.stderr
    assert second.stdout.strip() == "approved by bob: v1 is champion (history #2)"
    history = finsent(project, "history").stdout.splitlines()
    assert "challenger: - -> v1  by alice" in history[0] and "awaiting approval" in history[0]
    assert "champion: - -> v1  by bob" in history[1]
    assert "reason: approved: validated on Q3 news (trained by alice)" in history[1]
    lineage = finsent(project, "lineage", "finsent-sentiment/1").stdout
    assert "by bob: approved: validated on Q3 news" in lineage and "by alice: gates passed" in lineage


def test_the_monitor_scores_the_challenger_in_the_shadow_and_a_rejection_is_recorded(project, approved, tmp_path):
    import mlflow

    challenger = finsent(project, "run", "-S", "train.seed=7", "-S", NOT_SLICES, **ALICE)
    assert challenger.returncode == 0, challenger.stdout + challenger.stderr
    assert "version 2 [challenger] (new version)" in challenger.stdout
    assert "vs champion v1" in challenger.stdout

    sample = pd.read_csv(REPO / "data" / "sample" / "financial_news.csv").iloc[-60:]
    batch = tmp_path / "news.csv"
    sample.drop(columns="label").assign(published_at=[f"2026-11-{2 + i // 20:02d}T10:00:00Z" for i in range(60)]
                                        ).to_csv(batch, index=False)
    monitored = finsent(project, "monitor", "--input", str(batch), "--out", str(tmp_path / "out"))
    assert monitored.returncode == 0, monitored.stdout + monitored.stderr
    assert "shadow: challenger v2 agrees with the champion on" in monitored.stdout
    shadow = json.loads((tmp_path / "out" / "shadow.json").read_text())
    assert (shadow["champion_version"], shadow["challenger_version"], shadow["rows"]) == ("1", "2", 60)
    assert len(shadow["periods"]) == 3 and 0.0 <= shadow["agreement"] <= 1.0
    disagreements = pd.read_csv(tmp_path / "out" / "shadow_disagreements.csv")
    assert len(disagreements) == shadow["disagreements"] == round((1 - shadow["agreement"]) * 60)
    assert "## Shadow scoring: challenger v2" in (tmp_path / "out" / "monitor_report.md").read_text()
    client = mlflow.MlflowClient(f"sqlite:///{project / '.finsent' / 'mlflow.db'}")
    run_id = monitored.stdout.rsplit("MLflow run ", 1)[1].split()[0]
    logged = client.get_run(run_id)
    assert logged.data.metrics["shadow_agreement"] == shadow["agreement"]
    assert client.get_experiment(logged.info.experiment_id).name == "finsent-monitor"
    assert logged.data.tags["challenger_version"] == "2" and "shadow.json" in [
        f.path for f in client.list_artifacts(run_id)]

    rejected = finsent(project, "reject", "2", "--reason", "misreads guidance cuts", **CAROL)
    assert rejected.returncode == 0, rejected.stderr
    assert "rejected by carol: v2 is no longer challenger" in rejected.stdout
    assert "challenger: v2 -> -  by carol" in finsent(project, "history").stdout
    again = finsent(project, "run", "-S", "train.seed=7", "-S", NOT_SLICES, **ALICE)  # the same model again
    assert again.returncode == 1 and "v2 was rejected by carol (misreads guidance cuts)" in again.stderr


def test_a_candidate_worse_on_one_source_is_refused_by_its_slice_gate(project, approved):
    """blogs.csv's training rows get rotated labels (negative -> neutral -> positive -> negative); the test rows
    are pinned to v1's and keep their labels, so both models are judged on the same, clean rows."""
    from finsent.config import NormalizeParams
    from finsent.data.ingest import normalize_text

    pinned = project / "data" / "pinned" / "test_ids.txt"
    pinned.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(project / "data" / "processed" / "split" / "test_ids.txt", pinned)
    tested = set(pd.read_parquet(project / "data" / "processed" / "split" / "test.parquet")["text"])
    blogs = pd.read_csv(project / "data" / "blogs.csv")
    train_rows = ~blogs["text"].map(lambda t: normalize_text(t, NormalizeParams())).isin(tested)
    rotate = {"negative": "neutral", "neutral": "positive", "positive": "negative"}
    blogs.loc[train_rows, "label"] = blogs.loc[train_rows, "label"].map(rotate)
    blogs.to_csv(project / "data" / "blogs.csv", index=False)

    noisy = finsent(project, "run", "-S", "split.test_ids_file=data/pinned/test_ids.txt", **ALICE)
    assert noisy.returncode == 1, noisy.stdout + noisy.stderr
    assert "[no alias] (new version)" in noisy.stdout and "vs champion v1" in noisy.stdout
    verdict = json.loads((project / "reports" / "gate.json").read_text())
    slices = {c["metric"]: c["passed"] for c in verdict["checks"] if c["gate"] == "max_slice_macro_f1_drop"}
    assert slices["macro_f1[source=blogs.csv]"] is False, verdict
    assert "macro_f1[source=blogs.csv]" in noisy.stderr and "gate failed" in noisy.stderr
    report = (project / "reports" / "evaluation_report.md").read_text()
    assert "## Per slice" in report and "| source=blogs.csv |" in report
