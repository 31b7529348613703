import dataclasses

import pandas as pd

from finsent.config import DataParams, NormalizeParams
from finsent.data.ingest import INGESTED_COLUMNS, ingest, normalize_text, text_id
from finsent.data.readers import detect_format
from finsent.data.sources import manifest

LABELS = ["negative", "neutral", "positive"]


def _ingest(tmp_path, *sources, ledger=None, **data):
    params = dataclasses.replace(DataParams(), sources=[str(s) for s in sources], **data)
    summary = ingest(manifest(params)["files"], LABELS, params, tmp_path / "out.parquet", ledger=ledger)
    return summary, pd.read_parquet(tmp_path / "out.parquet")


def test_phrasebank_release_format_latin1_crlf(tmp_path):
    source = tmp_path / "Sentences_Test.txt"
    lines = ["Kvarnby Oyj's net sales grew to EUR 12.4 mn from EUR 10.1 mn .@positive",
             "The board proposes a dividend of EUR 0.20 per share .@neutral",
             "Caf\u00e9 chain Mellow reported an operating loss @ its Espoo unit .@negative"]
    source.write_bytes("\r\n".join(lines).encode("latin-1") + b"\r\n")
    assert detect_format(source, source.read_bytes()) == "phrasebank"
    summary, frame = _ingest(tmp_path, source)
    assert summary["rows_read"] == 3
    assert frame["label"].tolist() == ["positive", "neutral", "negative"]
    assert frame.loc[2, "text"].startswith("Caf\u00e9 chain") and "@ its Espoo" in frame.loc[2, "text"]
    assert list(frame.columns) == INGESTED_COLUMNS
    assert (frame["source"] == "Sentences_Test.txt").all() and frame["source_record"].tolist() == [1, 2, 3]


def test_csv_with_bom_label_map_and_normalisation(tmp_path):
    source = tmp_path / "tweets.csv"
    source.write_text("tweet,sentiment\n\"Stock  up   5%\",1\nShares slide,0\nMeeting at noon,2\n", encoding="utf-8-sig")
    _, frame = _ingest(tmp_path, source, text_column="tweet", label_column="sentiment",
                       label_map={0: "negative", 1: "positive", 2: "neutral"})
    assert frame["text"].tolist() == ["Stock up 5%", "Shares slide", "Meeting at noon"]
    assert frame["label"].tolist() == ["positive", "negative", "neutral"]
    assert frame.loc[0, "id"] == text_id(normalize_text("Stock  up   5%"))


def test_normalisation_is_configurable():
    text = "Ｑ３  revenue\u00a0UP"
    assert normalize_text(text) == "Ｑ３ revenue UP"  # NFC keeps full-width forms, case kept
    assert normalize_text(text, NormalizeParams(unicode_form="NFKC", lowercase=True)) == "q3 revenue up"
    assert normalize_text(" a  b ", NormalizeParams(collapse_whitespace=False)) == " a  b "


def test_jsonl_and_parquet_sources_with_numeric_labels(tmp_path):
    (tmp_path / "a.jsonl").write_text('{"text": "Profit rose", "label": 2}\n{"text": "Sales fell", "label": 0}\n')
    pd.DataFrame({"text": ["Guidance kept"], "label": [1.0]}).to_parquet(tmp_path / "b.parquet")
    _, frame = _ingest(tmp_path, tmp_path / "a.jsonl", tmp_path / "b.parquet",
                       label_map={"0": "negative", "1": "neutral", "2": "positive"})
    assert frame["label"].tolist() == ["positive", "negative", "neutral"]


def test_ledger_keeps_first_ingestion_time_so_reingesting_is_byte_identical(tmp_path):
    folder = tmp_path / "incoming"
    folder.mkdir()
    (folder / "monday.csv").write_text("text,label\nProfit rose,positive\n")
    ledger = tmp_path / "ledger.json"
    first, frame = _ingest(tmp_path, folder, ledger=ledger)
    before = (tmp_path / "out.parquet").read_bytes()
    (folder / "tuesday.csv").write_text("text,label\nSales fell,negative\n")
    second, again = _ingest(tmp_path, folder, ledger=ledger)
    assert [f["new"] for f in first["files"]] == [True]
    assert [f["new"] for f in second["files"]] == [False, True]
    assert again.loc[again["source"] == "incoming/monday.csv", "ingested_at"].item() == frame["ingested_at"].item()
    (folder / "tuesday.csv").unlink()
    _ingest(tmp_path, folder, ledger=ledger)
    assert (tmp_path / "out.parquet").read_bytes() == before
