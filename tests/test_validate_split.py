import json

import pandas as pd
import pytest

from finsent.config import SplitParams, ValidationParams
from finsent.data.ingest import normalize_text, text_id
from finsent.data.split import check_leakage, split
from finsent.data.validate import validate
from finsent.errors import FinsentError

from conftest import LABELS, ingest_frame, sentences


def _ingested(tmp_path, frame):
    return ingest_frame(frame, tmp_path)


def test_rows_are_quarantined_with_reasons_and_accounted_for(tmp_path):
    good = sentences(10)
    bad = pd.DataFrame({"text": ["", "x" * 50, "ok text here", "ok text here", good.loc[0, "text"]],
                        "label": ["neutral", "positive", "positive", "negative", good.loc[0, "label"]]})
    ingested = _ingested(tmp_path, pd.concat([good, bad]))
    report = validate(ingested, LABELS, ValidationParams(min_rows=5, max_text_chars=40),
                      tmp_path / "accepted.parquet", tmp_path / "quarantine.parquet", tmp_path / "report.json")
    quarantine = pd.read_parquet(tmp_path / "quarantine.parquet")
    accounting = report["accounting"]
    assert accounting == {"rows_read": 35, "rows_accepted": 30, "rows_quarantined": 4, "duplicates_merged": 1}
    reasons = sorted(quarantine["reason"])
    assert reasons[0].startswith("conflicting_labels") and reasons[1].startswith("conflicting_labels")
    assert reasons.count("text_length_out_of_bounds") == 2
    assert json.loads((tmp_path / "report.json").read_text())["success"] is True


def test_dataset_level_failure_names_the_expectation_and_value(tmp_path):
    ingested = _ingested(tmp_path, sentences(2))
    expected = r"min_rows \(expect_table_row_count_to_be_between\): observed 6, threshold 50"
    with pytest.raises(FinsentError, match=expected):
        validate(ingested, LABELS, ValidationParams(min_rows=50), tmp_path / "a.parquet", tmp_path / "q.parquet",
                 tmp_path / "r.json")
    assert not (tmp_path / "a.parquet").exists()


def test_control_characters_and_binary_are_quarantined(tmp_path):
    bad = pd.DataFrame({"text": ["profit rose\x00\x01 sharply", "sales \ufffd\ufffd fell"], "label": ["positive", "negative"]})
    ingested = _ingested(tmp_path, pd.concat([sentences(10), bad]))
    report = validate(ingested, LABELS, ValidationParams(min_rows=5), tmp_path / "a.parquet", tmp_path / "q.parquet",
                      tmp_path / "r.json")
    quarantine = pd.read_parquet(tmp_path / "q.parquet")
    assert len(quarantine) == 2 and set(quarantine["reason"]) == {"control_characters_or_undecodable_bytes"}
    assert report["accounting"] == {"rows_read": 32, "rows_accepted": 30, "rows_quarantined": 2,
                                    "duplicates_merged": 0}


def test_a_missing_class_fails_the_class_share_check(tmp_path):
    frame = sentences(20)
    frame = pd.concat([frame[frame["label"] != "negative"], frame[frame["label"] == "negative"].head(1)])
    ingested = _ingested(tmp_path, frame)
    with pytest.raises(FinsentError, match=r"min_class_share\[negative\] .*observed 0.0244, threshold 0.05"):
        validate(ingested, LABELS, ValidationParams(min_rows=5), tmp_path / "a.parquet", tmp_path / "q.parquet",
                 tmp_path / "r.json")
    report = json.loads((tmp_path / "r.json").read_text())
    assert report["success"] is False and report["accounting"]["rows_accepted"] == 41


def test_too_many_duplicates_fail_the_duplicate_rate_check(tmp_path):
    frame = pd.concat([sentences(5)] * 3)
    ingested = _ingested(tmp_path, frame)
    with pytest.raises(FinsentError, match=r"max_duplicate_rate .*observed 0.6667, threshold 0.3"):
        validate(ingested, LABELS, ValidationParams(min_rows=5), tmp_path / "a.parquet", tmp_path / "q.parquet",
                 tmp_path / "r.json")


def test_split_is_stratified_deterministic_and_disjoint(tmp_path):
    ingested = _ingested(tmp_path, sentences(20))
    validate(ingested, LABELS, ValidationParams(), tmp_path / "accepted.parquet", tmp_path / "q.parquet",
             tmp_path / "r.json")
    first = split(tmp_path / "accepted.parquet", SplitParams(seed=7), tmp_path / "one")
    second = split(tmp_path / "accepted.parquet", SplitParams(seed=7), tmp_path / "two")
    assert first == second
    parts = {name: set(pd.read_parquet(tmp_path / "one" / f"{name}.parquet")["id"]) for name in first}
    assert not (parts["train"] & parts["test"] or parts["train"] & parts["val"] or parts["val"] & parts["test"])
    assert first["test"] == {"negative": 4, "neutral": 4, "positive": 4}
    assert sum(len(ids) for ids in parts.values()) == 60


def test_pinned_test_ids_keep_the_same_test_rows_across_seeds(tmp_path):
    ingested = _ingested(tmp_path, sentences(20))
    validate(ingested, LABELS, ValidationParams(), tmp_path / "accepted.parquet", tmp_path / "q.parquet",
             tmp_path / "r.json")
    split(tmp_path / "accepted.parquet", SplitParams(seed=1), tmp_path / "first")
    pin = tmp_path / "pinned.txt"
    pin.write_text((tmp_path / "first" / "test_ids.txt").read_text() + "0000000000000000\n")
    split(tmp_path / "accepted.parquet", SplitParams(seed=99, test_ids_file=str(pin)), tmp_path / "second")
    first, second = (set(pd.read_parquet(tmp_path / run / "test.parquet")["id"]) for run in ("first", "second"))
    assert first == second
    assert json.loads((tmp_path / "second" / "split.json").read_text())["pinned_ids_not_in_data"] == 1
    train = set(pd.read_parquet(tmp_path / "second" / "train.parquet")["id"])
    assert not train & second
    with pytest.raises(FinsentError, match="split.test_ids_file not found"):
        split(tmp_path / "accepted.parquet", SplitParams(test_ids_file=str(tmp_path / "nope.txt")), tmp_path / "x")


def test_leakage_check_fails_when_a_text_sits_in_two_splits():
    train, val, test = sentences(4), sentences(1), sentences(4).tail(2)
    with pytest.raises(FinsentError, match=r"train_test_leakage .*: 10 rows share a text id across splits"):
        check_leakage(*(ingest_id(frame) for frame in (train, val, test)))
    assert check_leakage(ingest_id(train.head(6)), ingest_id(train.tail(6)), ingest_id(test.head(0)))["success"]


def ingest_id(frame: pd.DataFrame) -> pd.DataFrame:
    return frame.assign(id=frame["text"].map(lambda t: text_id(normalize_text(t))))


def test_file_backed_suites_stored_results_and_data_docs(tmp_path):
    ingested = _ingested(tmp_path, sentences(20))
    docs = tmp_path / "reports" / "data_docs"
    for max_chars in (1000, 900):  # a threshold change between runs updates the committed suite
        validate(ingested, LABELS, ValidationParams(max_text_chars=max_chars), tmp_path / "a.parquet",
                 tmp_path / "q.parquet", tmp_path / "r.json", gx_project=tmp_path, docs_dir=docs)
    suite = json.loads((tmp_path / "gx" / "expectations" / "finsent_rows.json").read_text())
    lengths = [e for e in suite["expectations"] if e["type"] == "expect_column_value_lengths_to_be_between"]
    assert lengths[0]["kwargs"]["max_value"] == 900
    assert (tmp_path / "gx" / "great_expectations.yml").is_file()
    assert "uncommitted/" in (tmp_path / "gx" / ".gitignore").read_text()
    index = (docs / "index.html").read_text()
    assert "finsent_rows" in index and "finsent_dataset" in index
    pages = list((docs / "validations" / "finsent_rows").rglob("*.html"))
    assert len(pages) == 2  # one page per stored run
    settings = (tmp_path / "gx" / "great_expectations.yml").read_text()
    validate(ingested, LABELS, ValidationParams(max_text_chars=900), tmp_path / "a.parquet", tmp_path / "q.parquet",
             tmp_path / "r.json", gx_project=tmp_path, docs_dir=tmp_path / "elsewhere" / "docs")
    assert (tmp_path / "gx" / "great_expectations.yml").read_text() == settings, "a run's --docs is not persisted"
    assert "elsewhere" not in settings and (tmp_path / "elsewhere" / "docs" / "index.html").is_file()


def test_quarantined_text_never_reaches_the_data_docs_html(tmp_path):
    payload = "=<script>alert(1)</script> <img src=x onerror=alert(2)>"
    frame = pd.concat([sentences(20), pd.DataFrame({"text": [payload], "label": ["positive"]})])
    ingested = _ingested(tmp_path, frame)
    docs = tmp_path / "docs"
    report = validate(ingested, LABELS, ValidationParams(), tmp_path / "a.parquet", tmp_path / "q.parquet",
                      tmp_path / "r.json", gx_project=tmp_path, docs_dir=docs)
    assert report["accounting"]["rows_quarantined"] == 1
    assert pd.read_parquet(tmp_path / "q.parquet")["text"].tolist() == [payload]
    html = "".join(page.read_text() for page in docs.rglob("*.html"))
    assert "finsent_rows" in html and "alert(1)" not in html and "onerror" not in html
