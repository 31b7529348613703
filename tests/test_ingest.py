import pandas as pd
import pytest

from finsent.config import DataParams
from finsent.data.ingest import detect_format, ingest, normalize_text, text_id
from finsent.errors import FinsentError

LABELS = ["negative", "neutral", "positive"]


def test_phrasebank_release_format_latin1_crlf(tmp_path):
    source = tmp_path / "Sentences_Test.txt"
    lines = ["Kvarnby Oyj's net sales grew to EUR 12.4 mn from EUR 10.1 mn .@positive",
             "The board proposes a dividend of EUR 0.20 per share .@neutral",
             "Caf\u00e9 chain Mellow reported an operating loss @ its Espoo unit .@negative"]
    source.write_bytes("\r\n".join(lines).encode("latin-1") + b"\r\n")
    assert detect_format(source) == "phrasebank"
    out = tmp_path / "ingested.parquet"
    counts = ingest(source, DataParams(format="auto"), LABELS, out)
    frame = pd.read_parquet(out)
    assert counts["rows_read"] == 3
    assert frame["label"].tolist() == ["positive", "neutral", "negative"]
    assert frame.loc[2, "text"].startswith("Caf\u00e9 chain") and "@ its Espoo" in frame.loc[2, "text"]
    assert list(frame.columns) == ["id", "text", "label", "source", "ingested_at"]
    assert (frame["source"] == "Sentences_Test.txt").all()


def test_csv_with_bom_label_map_and_normalisation(tmp_path):
    source = tmp_path / "tweets.csv"
    source.write_text("tweet,sentiment\n\"Stock  up   5%\",1\nShares slide,0\nMeeting at noon,2\n", encoding="utf-8-sig")
    params = DataParams(text_column="tweet", label_column="sentiment",
                        label_map={0: "negative", 1: "positive", 2: "neutral"})
    ingest(source, params, LABELS, tmp_path / "out.parquet")
    frame = pd.read_parquet(tmp_path / "out.parquet")
    assert frame["text"].tolist() == ["Stock up 5%", "Shares slide", "Meeting at noon"]
    assert frame["label"].tolist() == ["positive", "negative", "neutral"]
    assert frame.loc[0, "id"] == text_id(normalize_text("Stock  up   5%"))


@pytest.mark.parametrize("content, message", [
    (b"", "data file is empty"),
    (b"text,label\nProfit rose,bullish\n", r"unknown label\(s\) 'bullish' \(1 rows\)"),
    (b"sentence,label\nProfit rose,positive\n", r"missing column\(s\) text"),
])
def test_bad_files_give_one_clear_error(tmp_path, content, message):
    source = tmp_path / "bad.csv"
    source.write_bytes(content)
    with pytest.raises(FinsentError, match=message):
        ingest(source, DataParams(), LABELS, tmp_path / "out.parquet")
    assert not (tmp_path / "out.parquet").exists()


def test_missing_file(tmp_path):
    with pytest.raises(FinsentError, match="data file not found"):
        ingest(tmp_path / "nope.csv", DataParams(), LABELS, tmp_path / "out.parquet")
