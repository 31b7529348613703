"""Bytes of one source file -> a raw frame (text, label, record) in any supported format.

What a file holds is decided from its bytes, not trusted from its name: gzip is decompressed
whatever the file is called (streamed, up to data.max_file_mb), binary content is refused, and the
encoding is detected (utf-8, with or without BOM; UTF-16 / UTF-32 with a BOM; else cp1252/latin-1 as
in the Financial PhraseBank release, when its non-ASCII bytes read as words or punctuation). A file
with a few invalid bytes is otherwise read as utf-8 with U+FFFD in their place, so only the damaged
rows are quarantined (validate stage), not the whole file mis-decoded. A column name given twice is
refused; a text cell that is not a string is marked so that validate quarantines it. ``record`` is the 1-based data
record number in the file (a record may span lines when a quoted field holds newlines).
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import math
import re
from pathlib import Path

import pandas as pd

from finsent.config import SourceSpec
from finsent.errors import FinsentError

FORMATS = ("csv", "tsv", "jsonl", "parquet", "phrasebank")
CANONICAL_LABEL_WORDS = ("negative", "neutral", "positive")
_SUFFIX_FORMATS = {".csv": "csv", ".tsv": "tsv", ".txt": None, ".jsonl": "jsonl", ".json": "jsonl",
                   ".ndjson": "jsonl", ".parquet": "parquet", ".pq": "parquet"}
_GZIP_MAGIC = b"\x1f\x8b"
_PARQUET_MAGIC = b"PAR1"
_DELIMITERS = ",;\t|"
_BINARY = re.compile(rb"[\x00-\x08\x0e-\x1f\x7f]")
_UTF8_MULTIBYTE = re.compile(rb"[\xc2-\xf4][\x80-\xbf]+")


DEFAULT_MAX_BYTES = 2048 * 2**20  # data.max_file_mb: a file, or what a gzip file unpacks to, larger than this is refused
NOT_A_STRING = "\ue000"  # private-use mark before the JSON of a text cell that was not a string (validate quarantines it)
_UTF16_32_BOMS = (b"\xff\xfe\x00\x00", b"\x00\x00\xfe\xff", b"\xff\xfe", b"\xfe\xff")


def load_bytes(path: Path, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[bytes, str | None]:
    """The file's content (gunzipped if it is gzip, whatever its name) and the compression found. Decompression
    streams and stops at ``max_bytes``: a small gzip file cannot unpack into all of the machine's memory."""
    with path.open("rb") as handle:
        magic = handle.read(2)
    if magic != _GZIP_MAGIC:
        size = path.stat().st_size
        if size > max_bytes:
            raise FinsentError(f"{path}: {size / 2**20:.0f} MB is more than data.max_file_mb "
                               f"({max_bytes / 2**20:.0f}); split the file or raise the limit")
        return path.read_bytes(), None
    chunks, total = [], 0
    try:
        with gzip.open(path, "rb") as stream:
            while chunk := stream.read(1 << 20):
                total += len(chunk)
                if total > max_bytes:
                    raise FinsentError(f"{path}: unpacks to more than data.max_file_mb ({max_bytes / 2**20:.0f} MB) "
                                       f"and was not read further; split the file or raise the limit")
                chunks.append(chunk)
    except (OSError, EOFError) as exc:
        raise FinsentError(f"{path}: starts like gzip but does not decompress ({exc}); re-export the file") from exc
    return b"".join(chunks), "gzip"


def _refuse_binary(raw: bytes, path: Path) -> None:
    head = raw[:65536]
    controls = len(_BINARY.findall(head))
    if controls > max(8, len(head) // 100):  # a stray control byte is a bad row; this many is not text
        raise FinsentError(f"{path}: looks binary ({controls} control bytes in the first {len(head)}), not text; "
                           f"supported formats: {', '.join(FORMATS)}")


def decode(raw: bytes, encoding: str, path: Path) -> str:
    """Text of ``raw``. ``auto``: utf-8 (BOM dropped) when the bytes look like utf-8, else cp1252/latin-1."""
    if encoding != "auto":
        damaged_ok = encoding.lower().replace("_", "-") in ("utf-8", "utf8", "utf-8-sig")
        try:
            return raw.decode(encoding, errors="replace" if damaged_ok else "strict")
        except LookupError as exc:
            raise FinsentError(f"unknown data.encoding '{encoding}' for {path}") from exc
        except UnicodeDecodeError as exc:
            line = raw[:exc.start].count(b"\n") + 1
            raise FinsentError(f"{path}:{line}: byte 0x{raw[exc.start]:02x} is not valid {encoding}; "
                               f"set data.encoding to the file's real encoding (or auto)") from exc
    if raw.startswith(_UTF16_32_BOMS):
        return raw.decode("utf-32" if raw[:4] in _UTF16_32_BOMS[:2] else "utf-16")
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        pass
    damaged = raw.decode("utf-8-sig", errors="replace").count("\ufffd")
    valid = len(_UTF8_MULTIBYTE.findall(raw))  # legacy 8-bit text almost never forms valid utf-8 sequences
    if (valid and valid >= damaged) or not _reads_as_cp1252(raw):
        return raw.decode("utf-8-sig", errors="replace")  # utf-8 with some damage: the damaged rows get quarantined
    try:
        return raw.decode("cp1252")
    except UnicodeDecodeError:  # bytes cp1252 leaves undefined (0x81, 0x8d, ...): latin-1 maps every byte
        return raw.decode("latin-1")


_HIGH_RUN = re.compile(rb"[\x80-\xff]+")
_CP1252_PUNCTUATION = set("‘’‚“”„–—…•€£¥§°±²³µ·×÷«»¢©®™¼½¾¡¿")


def _reads_as_cp1252(raw: bytes) -> bool:
    """Whether the non-ASCII bytes read as cp1252 text: every byte a printable character, and no word made only
    of them (0xFF 0xFE between spaces is damage in an ASCII file, 'H\xe4meenlinna' is a word). Damaged bytes
    make the file read as utf-8 instead, so that only the damaged rows are quarantined."""
    for match in _HIGH_RUN.finditer(raw):
        try:
            chars = match.group().decode("cp1252")
        except UnicodeDecodeError:  # 0x81, 0x8D, 0x8F, 0x90, 0x9D: undefined in cp1252
            return False
        if not all(c.isprintable() for c in chars):
            return False
        before, after = raw[match.start() - 1:match.start()], raw[match.end():match.end() + 1]
        alone = before.strip() == b"" and after.strip() == b""
        if len(chars) > 1 and alone and not all(c in _CP1252_PUNCTUATION for c in chars):
            return False
    return True


def _text_bytes(raw: bytes) -> bool:
    """UTF-16 / UTF-32 with a byte-order mark: text, although its zero bytes look binary."""
    return raw.startswith(_UTF16_32_BOMS)


def detect_format(path: Path, raw: bytes) -> str:
    if raw.startswith(_PARQUET_MAGIC):
        return "parquet"
    name = path.name.lower().removesuffix(".gz")
    by_suffix = _SUFFIX_FORMATS.get(Path(name).suffix)
    if by_suffix:
        return by_suffix
    head = raw[:4096].decode("utf-16", errors="replace") if _text_bytes(raw) else raw[:4096].decode("latin-1")
    first = next((line for line in head.splitlines() if line.strip()), "")
    if "@" in first and first.rpartition("@")[2].strip().lower() in CANONICAL_LABEL_WORDS:
        return "phrasebank"
    if first.lstrip().startswith("{"):
        return "jsonl"
    raise FinsentError(f"{path}: cannot tell the format from its name or content; set data.format "
                       f"(or the source's format) to one of {', '.join(FORMATS)}")


def _frame(rows: list[tuple], path: Path) -> pd.DataFrame:
    if not rows:
        raise FinsentError(f"{path}: no data rows (header only, or only blank lines)")
    return pd.DataFrame(rows, columns=["text", "label", "record"])


def read_phrasebank(text: str, path: Path) -> pd.DataFrame:
    """Financial PhraseBank release format: ``sentence@label`` per line (the last '@' separates)."""
    rows = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        sentence, sep, label = line.rpartition("@")
        if not sep:
            raise FinsentError(f"{path}:{number}: expected 'sentence@label', found no '@'")
        rows.append((sentence, label.strip(), number))
    return _frame(rows, path)


def _sniff_delimiter(text: str) -> str:
    header = next((line for line in text.splitlines() if line.strip()), "")
    try:
        return csv.Sniffer().sniff(header, delimiters=_DELIMITERS).delimiter
    except csv.Error:
        return ","


def read_delimited(text: str, delimiter: str, path: Path) -> pd.DataFrame:
    """CSV/TSV as strings (no NA guessing: 'NA' may be a ticker); ragged rows are an error with the line."""
    delimiter = _sniff_delimiter(text) if delimiter == "auto" else delimiter
    header = next(csv.reader(io.StringIO(next((line for line in text.splitlines() if line.strip()), "")),
                             delimiter=delimiter), [])
    _refuse_duplicate_columns([name.strip() for name in header], path)
    try:
        frame = pd.read_csv(io.StringIO(text), sep=delimiter, dtype=str, keep_default_na=False,
                            skip_blank_lines=True)
    except pd.errors.EmptyDataError as exc:
        raise FinsentError(f"{path}: no header and no rows") from exc
    except pd.errors.ParserError as exc:
        detail = str(exc).splitlines()[0].removeprefix("Error tokenizing data. C error: ")
        raise FinsentError(f"{path}: {detail} (delimiter {delimiter!r}; quote fields that contain it)") from exc
    frame.columns = [str(c).strip() for c in frame.columns]
    return frame


def _refuse_duplicate_columns(names: list[str], path: Path, where: str = "header") -> None:
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise FinsentError(f"{path}: column name(s) {', '.join(map(repr, repeated))} appear more than once in the "
                           f"{where}; which one holds the data is ambiguous: rename or drop the copies")


def read_jsonl(text: str, path: Path) -> pd.DataFrame:
    records = []
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        keys: list[str] = []  # the keys of the object parsed last: the line's own object, after its nested ones

        def remember_keys(items):
            keys[:] = [key for key, _ in items]
            return dict(items)

        try:
            record = json.loads(line, object_pairs_hook=remember_keys)
        except json.JSONDecodeError as exc:
            raise FinsentError(f"{path}:{number}: not valid JSON ({exc.msg}); one JSON object per line") from exc
        if not isinstance(record, dict):
            raise FinsentError(f"{path}:{number}: expected a JSON object, found {type(record).__name__}")
        _refuse_duplicate_columns(keys, path, f"object on line {number}")
        records.append(record)
    return pd.DataFrame.from_records(records)


def _label_text(value) -> str | None:
    """Raw label as text: 1, 1.0 and '1' are the same label; missing (None, NaN, blank) stays missing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip() or None


def _text_value(value) -> str | None:
    """A text cell as read; one that is not a string (a JSON object or list, a Parquet struct, a number) keeps
    its JSON behind NOT_A_STRING, so the validate stage quarantines it with that reason instead of guessing."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, str):
        return value
    if hasattr(value, "tolist"):  # numpy arrays / scalars from Parquet
        value = value.tolist()
    return NOT_A_STRING + f"not a string ({type(value).__name__}): " + json.dumps(value, default=str)[:200]


def read_source(path: Path, spec: SourceSpec, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[pd.DataFrame, dict]:
    """One file -> (frame with text, label, record; facts about how it was read)."""
    raw, compression = load_bytes(path, max_bytes)
    if not raw.strip():
        raise FinsentError(f"{path}: file is empty")
    fmt = detect_format(path, raw) if spec.format == "auto" else spec.format
    if fmt not in FORMATS:
        raise FinsentError(f"unknown format '{fmt}' for {path}; use one of auto, {', '.join(FORMATS)}")
    if fmt == "parquet":
        try:
            frame = pd.read_parquet(io.BytesIO(raw))
        except Exception as exc:  # pyarrow raises several types for a damaged file
            raise FinsentError(f"{path}: not a readable parquet file ({str(exc).splitlines()[0]})") from exc
    else:
        if not (_text_bytes(raw) or spec.encoding.lower().replace("_", "-").startswith(("utf-16", "utf-32"))):
            _refuse_binary(raw, path)
        text = decode(raw, spec.encoding, path)
        if fmt == "phrasebank":
            return read_phrasebank(text, path), {"format": fmt, "compression": compression}
        frame = (read_jsonl(text, path) if fmt == "jsonl"
                 else read_delimited(text, "\t" if fmt == "tsv" else spec.delimiter, path))
    if fmt == "parquet":
        _refuse_duplicate_columns([str(c) for c in frame.columns], path, "schema")
    missing = [c for c in (spec.text_column, spec.label_column) if c not in frame.columns]
    if missing:
        found = ", ".join(map(str, frame.columns)) or "none"
        hint = ("; the header looks split on the wrong delimiter, set data.delimiter"
                if any(d in str(c) for c in frame.columns for d in _DELIMITERS) else
                "; set data.text_column / data.label_column")
        raise FinsentError(f"{path}: missing column(s) {', '.join(missing)}; found {found}{hint}")
    if frame.empty:
        raise FinsentError(f"{path}: no data rows (header only)")
    rows = list(zip(frame[spec.text_column].map(_text_value), frame[spec.label_column].map(_label_text),
                    range(1, len(frame) + 1)))
    return _frame(rows, path), {"format": fmt, "compression": compression,
                                "ignored_columns": [str(c) for c in frame.columns
                                                    if c not in (spec.text_column, spec.label_column)]}
