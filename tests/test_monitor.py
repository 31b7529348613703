"""Monitor logic on scored frames built in the test (no model needed), and scoring with a tiny bundle."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from finsent.config import MonitorParams, NormalizeParams
from finsent.errors import FinsentError
from finsent.monitor.aggregate import aggregate, spikes, spreadsheet_safe
from finsent.monitor.prediction_drift import prediction_drift

from conftest import LABELS


def scored_stream(days: int = 14, rows: int = 40, spike_day: int | None = 10, spike_share: float = 0.7,
                  base_share: float = 0.15, seed: int = 0) -> pd.DataFrame:
    """Scored rows as the monitor writes them: a negative share of ~base_share a day, one spike day."""
    rng = np.random.default_rng(seed)
    records = []
    for day in range(days):
        share = spike_share if day == spike_day else base_share
        for i in range(rows):
            label = "negative" if rng.random() < share else str(rng.choice(["neutral", "positive"]))
            probabilities = np.full(3, 0.1)
            probabilities[LABELS.index(label)] = 0.8
            records.append({"published_at": f"2026-11-{day + 1:02d}T{9 + i % 8:02d}:30:00Z", "label": label,
                            "ticker": "ACME" if i % 2 else "GLOBX",
                            **{f"prob_{n}": p for n, p in zip(LABELS, probabilities)}})
    return pd.DataFrame(records)


def test_an_injected_spike_raises_exactly_that_alert():
    judged, alerts = spikes(aggregate(scored_stream(), LABELS, MonitorParams()), MonitorParams())
    assert [(a["entity"], a["period"]) for a in alerts] == [("(all)", "2026-11-11 00:00:00")]
    assert alerts[0]["share_negative"] > alerts[0]["threshold"] > alerts[0]["trailing_mean"]
    assert judged["judged"].sum() == 14 - 3  # the first spike_min_periods days have too little history


@pytest.mark.parametrize("seed", range(10))
def test_no_alert_without_a_spike(seed):
    _, alerts = spikes(aggregate(scored_stream(spike_day=None, seed=seed), LABELS, MonitorParams()), MonitorParams())
    assert alerts == []


def test_per_entity_alerts_and_small_periods_are_not_judged():
    stream = scored_stream()
    stream.loc[(stream["published_at"].str.startswith("2026-11-11")) & (stream["ticker"] == "GLOBX"),
               "label"] = "neutral"  # the spike is ACME's alone
    params = MonitorParams(entity_column="ticker", min_rows_per_period=15)
    _, alerts = spikes(aggregate(stream, LABELS, params), params)
    assert ("ACME", "2026-11-11 00:00:00") in [(a["entity"], a["period"]) for a in alerts]
    assert "GLOBX" not in [a["entity"] for a in alerts]
    quiet = MonitorParams(min_rows_per_period=100)
    _, none = spikes(aggregate(stream, LABELS, quiet), quiet)
    assert none == []


def test_time_column_problems_are_one_clear_error():
    with pytest.raises(FinsentError, match="monitor.time_column 'published_at' is not a column"):
        aggregate(scored_stream().drop(columns="published_at"), LABELS, MonitorParams())
    broken = scored_stream()
    broken.loc[3, "published_at"] = "yesterday-ish"
    with pytest.raises(FinsentError, match=r"1 rows have no readable published_at \(e.g. \['yesterday-ish'\]\)"):
        aggregate(broken, LABELS, MonitorParams())
    one_period = aggregate(scored_stream(), LABELS, MonitorParams(time_column=None))
    assert len(one_period) == 1 and one_period["rows"].item() == 560


def test_prediction_drift_flags_a_shifted_batch_and_not_an_unshifted_one():
    reference = scored_stream(days=5, spike_day=None, seed=1)
    same = prediction_drift(scored_stream(days=5, spike_day=None, seed=2), reference, LABELS, MonitorParams())
    shifted = prediction_drift(scored_stream(days=5, spike_day=None, base_share=0.8, seed=3), reference, LABELS,
                               MonitorParams())
    assert not same["drifted"] and shifted["drifted"]
    assert {c["check"]: c["drifted"] for c in shifted["checks"]}["label_psi"] is True


def test_scoring_accounts_for_every_row(tmp_path, tiny_base):
    from finsent.config import ModelParams, Params, PeftParams, SplitParams, TrainParams, ValidationParams
    from finsent.data.split import split
    from finsent.data.validate import validate
    from finsent.features import tokenize
    from finsent.monitor.score import read_batch, score
    from finsent.train.fit import fit

    from conftest import ingest_frame, sentences

    ingested = ingest_frame(sentences(10), tmp_path)
    validate(ingested, LABELS, ValidationParams(min_rows=10), tmp_path / "a.parquet", tmp_path / "q.parquet",
             tmp_path / "r.json")
    split(tmp_path / "a.parquet", SplitParams(seed=1), tmp_path / "split")
    params = Params(model=ModelParams(base=str(tiny_base), max_length=32), peft=PeftParams(method="head_only"),
                    train=TrainParams(epochs=1))
    tokenize(tmp_path / "split", LABELS, params.model, tmp_path / "tok")
    fit(tmp_path / "tok", params, tmp_path / "bundle", tmp_path / "train.json")
    (tmp_path / "news.jsonl").write_text('{"text": "profit rose to a record"}\n{"text": "   "}\n{"text": null}\n'
                                         '{"text": "shares fell after a loss"}\n')
    batch = read_batch(tmp_path / "news.jsonl", "text")
    scored, skipped, figures = score(batch, tmp_path / "bundle", "text", 8, "7", NormalizeParams())
    assert (figures["rows_read"], figures["rows_scored"], figures["rows_skipped"]) == (4, 2, 2)
    assert skipped["reason"].tolist() == ["text_missing_or_blank"] * 2 and skipped["source_record"].tolist() == [2, 3]
    assert set(scored.columns) >= {"id", "label", "prob_negative", "prob_neutral", "prob_positive", "confidence",
                                   "model_version", "source"}
    assert np.allclose(scored[[f"prob_{n}" for n in LABELS]].sum(axis=1), 1.0)


def test_aggregates_csv_never_starts_a_cell_with_a_formula(tmp_path):
    frame = pd.DataFrame({"entity": ["=HYPERLINK(\"http://x\")", "+1+cmd|' /C calc'!A0", "-2", "@SUM(A1)", "\tx",
                                     "ACME"], "rows": [1, 2, 3, 4, 5, 6], "share_negative": [0.1] * 6})
    spreadsheet_safe(frame).to_csv(tmp_path / "aggregates.csv", index=False)
    written = pd.read_csv(tmp_path / "aggregates.csv", dtype=str, keep_default_na=False)
    assert list(written["entity"]) == ["'=HYPERLINK(\"http://x\")", "'+1+cmd|' /C calc'!A0", "'-2", "'@SUM(A1)",
                                       "'\tx", "ACME"]
    assert list(written["rows"]) == ["1", "2", "3", "4", "5", "6"]  # numbers stay numbers


def test_shadow_scoring_reports_agreement_share_changes_and_the_strongest_disagreements():
    """A challenger that calls every third negative row of day 2 neutral: agreement, shares per period and the
    disagreements are exactly those rows; below the minimum agreement it is flagged."""
    from finsent.monitor.shadow import compare_shadow

    champion = scored_stream(days=3, rows=30, spike_day=None, base_share=0.3, seed=1).assign(
        text=lambda f: [f"sentence {i}" for i in range(len(f))], source="batch.csv",
        source_record=lambda f: range(1, len(f) + 1), id=lambda f: [f"id{i}" for i in range(len(f))],
        confidence=0.8, model_version="1")
    challenger = champion.assign(model_version="2")
    day_two = champion.index[(champion["published_at"].str.startswith("2026-11-02")) & (champion["label"] ==
                                                                                         "negative")][::3]
    challenger.loc[day_two, "label"] = "neutral"
    challenger.loc[day_two[-1], "confidence"] = 0.95
    report, disagreements = compare_shadow(champion, challenger, LABELS, MonitorParams(shadow_min_agreement=0.99))
    assert (report["champion_version"], report["challenger_version"], report["rows"]) == ("1", "2", 90)
    assert report["disagreements"] == len(day_two) == len(disagreements) > 0
    assert report["agreement"] == round(1 - len(day_two) / 90, 4) and report["below_min_agreement"]
    assert report["shares"]["negative"]["difference"] == round(-len(day_two) / 90, 4)
    days = {p["period"][:10]: p for p in report["periods"]}
    assert days["2026-11-01"]["agreement"] == days["2026-11-03"]["agreement"] == 1.0
    assert days["2026-11-02"]["shares"]["neutral"]["difference"] == round(len(day_two) / 30, 4)
    assert disagreements.iloc[0]["text"] == champion.loc[day_two[-1], "text"]  # the most confident pair first
    assert set(disagreements["champion_label"]) == {"negative"} and set(disagreements["challenger_label"]) == {
        "neutral"}
    assert not compare_shadow(champion, champion, LABELS, MonitorParams())[0]["below_min_agreement"]


def test_the_monitor_report_carries_the_backends_note(tmp_path):
    from finsent.monitor.steps import write_report

    figures = {"rows_read": 3, "rows_scored": 2, "rows_skipped": 1, "rows_per_second": 10.0, "backend": "onnx-int8",
               "backend_note": "INT8 was checked on CPU A (avx512_vnni); this CPU (CPU B) has avx2, so its labels "
                               "may differ"}
    drift = {"checks": [], "retraining": "not needed"}
    report = write_report(tmp_path, figures, [], drift, "3")
    assert f"**Note**: {figures['backend_note']}" in report
    assert "**Note**" not in write_report(tmp_path, {**figures, "backend_note": None}, [], drift, "3")
