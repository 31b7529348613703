"""Scoring on ONNX Runtime: the adapter folded into the base, exported to ONNX, and its INT8 quantization.

The onnx stage writes ``model.onnx`` (fp32), ``model-int8.onnx`` (weights quantized to INT8 per output
channel, activations quantized on the fly: ONNX Runtime's dynamic quantization; scored one row at a time, see
``OnnxScorer``) and ``choice.json``: the backend the model is served with and why. It scores the test split
with the torch model and both ONNX models and keeps

- ``onnx-int8`` only when its macro-F1 is within ``serving.int8_max_macro_f1_drop`` of the torch model's
  and at least ``serving.int8_min_label_agreement`` of its labels are the torch model's labels (two
  quantization recipes are tried in turn: every projection INT8, then the sensitive ones kept fp32),
- else ``onnx`` (fp32) when its probabilities equal the torch model's within ``ONNX_TOLERANCE``,
- else ``torch``, the reference.

A registered model carries the folder beside its adapter bundle (``onnx/``); every load of it (``finsent
predict``, the monitor, the pyfunc model, ``mlflow models serve``) reads the choice, and a bundle without the
folder is served on torch. An ONNX file is a graph of standard operators and weights, no code.

INT8 results depend on the CPU: ONNX Runtime picks its integer kernels by the CPU's instructions, and without
VNNI (AVX2, plain AVX-512) 8-bit products are summed in 16 bits and can saturate. So the choice records the
CPU the check ran on (``checked_on``), and a load on a CPU with other INT8 instructions says so (``Scorer.note``).
"""

from __future__ import annotations

import itertools
import json
import logging
import os
import re
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Iterator

import numpy as np

BUNDLE_SUBDIR = "onnx"  # the folder's name inside a registered model's adapter bundle
FP32_FILE = "model.onnx"
INT8_FILE = "model-int8.onnx"
CHOICE_FILE = "choice.json"
BACKEND_FILES = {"onnx-int8": INT8_FILE, "onnx": FP32_FILE}
ONNX_TOLERANCE = 1e-4  # largest difference of a class probability, ONNX fp32 vs torch
OPSET = 17


@dataclass(frozen=True)
class BackendChoice:
    """Which backend serves the model, and the test figures it was chosen on."""

    backend: str
    reason: str
    rows: int = 0
    macro_f1: dict | None = None  # backend -> test macro-F1
    int8_label_agreement: float | None = None  # share of test rows where INT8 and torch give the same label
    int8_recipe: str | None = None  # the last INT8 recipe tried (_int8_recipes): the chosen one, or the refused
    onnx_max_probability_diff: float | None = None
    checked_on: dict | None = None  # the CPU the INT8 check ran on (this_cpu())

    def to_dict(self) -> dict:
        return asdict(self)


def read_choice(folder: Path) -> BackendChoice | None:
    file = Path(folder) / CHOICE_FILE
    return BackendChoice(**json.loads(file.read_text())) if file.is_file() else None


# The instructions ONNX Runtime's INT8 matrix products are chosen by (x86: AVX2, AVX-512, VNNI, AMX; Arm: the
# dot-product and int8 matrix-multiply extensions), as /proc/cpuinfo names them.
INT8_INSTRUCTIONS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "amx_int8", "asimddp", "i8mm")


def this_cpu() -> dict:
    """The CPU as far as INT8 results go: its model, the INT8 instructions it has (None where the system does
    not say: no /proc/cpuinfo) and the ONNX Runtime version."""
    import platform

    import onnxruntime

    model, instructions = platform.processor() or platform.machine(), None
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    fields = {key.strip(): value.strip()  # the last CPU's fields: all are alike
              for key, value in (line.split(":", 1) for line in lines if ":" in line)}
    model = fields.get("model name", model)
    flags = fields.get("flags", fields.get("Features"))
    if flags is not None:
        instructions = [name for name in INT8_INSTRUCTIONS if name in flags.split()]
    return {"cpu": model, "int8_instructions": instructions, "onnxruntime": onnxruntime.__version__}


def int8_cpu_note(checked_on: dict | None, here: dict) -> str | None:
    """One line when the INT8 model runs on a CPU whose INT8 instructions differ from the one it was checked
    on (its labels may then differ from the checked ones); None when they match or either is unknown."""
    if not checked_on or checked_on.get("int8_instructions") is None or here["int8_instructions"] is None:
        return None
    if set(checked_on["int8_instructions"]) == set(here["int8_instructions"]):
        return None
    checked, ours = (", ".join(cpu["int8_instructions"]) or "none" for cpu in (checked_on, here))
    return (f"INT8 was checked on {checked_on['cpu']} ({checked}); this CPU ({here['cpu']}) has "
            f"{ours}, so its labels may differ from the checked ones: re-run the onnx stage here "
            f"to check it, or serve on ONNX fp32 (serving.backend: onnx)")


def export_fp32(bundle_dir: Path, out_file: Path) -> None:
    """Fold the adapter into the base (``load_merged``: the model ``finsent export`` saves) and trace it to ONNX:
    token ids and attention mask in (any batch size and length), logits out."""
    import torch

    from finsent.bundle import load_merged

    class Logits(torch.nn.Module):
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    model, tokenizer, _ = load_merged(bundle_dir)
    example = tokenizer(["an example sentence", "two"], padding=True, return_tensors="pt")
    sequences = {0: "batch", 1: "length"}
    with warnings.catch_warnings():  # the trace's notes on shape checks it records as constants
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        torch.onnx.export(Logits(model), (example["input_ids"], example["attention_mask"]), str(out_file),
                          dynamo=False, opset_version=OPSET, input_names=["input_ids", "attention_mask"],
                          output_names=["logits"], dynamic_axes={"input_ids": sequences,
                                                                 "attention_mask": sequences,
                                                                 "logits": {0: "batch"}})


def quantize_int8(fp32_file: Path, out_file: Path, keep_fp32: tuple[str, ...] = ()) -> None:
    """INT8 weights per output channel for the matrix products with a weight operand (the encoder's
    projections) except the nodes named in ``keep_fp32``; embeddings, the attention products of two activations,
    and the pooler / classifier heads stay fp32. Measured on a trained adapter over Financial PhraseBank: faster
    than also quantizing the embedding lookups (ONNX Runtime's default op list) and as close to the fp32 labels
    (docs/benchmarks.md)."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # its advice to pre-process (shape inference) fails on this graph's dynamic length
    try:
        quantize_dynamic(str(fp32_file), str(out_file), weight_type=QuantType.QInt8, per_channel=True,
                         op_types_to_quantize=["MatMul"], nodes_to_exclude=list(keep_fp32),
                         extra_options={"MatMulConstBOnly": True})
    finally:
        root.setLevel(level)


# The encoder's projections INT8 is most sensitive in (measured on Financial PhraseBank, docs/benchmarks.md):
# every layer's feed-forward output and the first layer's feed-forward input. BERT-family node names (BERT,
# RoBERTa, MiniLM); a graph without them has no second recipe.
SENSITIVE_PROJECTIONS = re.compile(r"/layer\.\d+/output/dense/MatMul$|/layer\.0/intermediate/dense/MatMul$")


def sensitive_projections(fp32_file: Path) -> tuple[str, ...]:
    import onnx

    graph = onnx.load(str(fp32_file), load_external_data=False).graph
    return tuple(node.name for node in graph.node if node.op_type == "MatMul"
                 and SENSITIVE_PROJECTIONS.search(node.name))


TOKENIZER_FILE = "tokenizer.json"  # a fast tokenizer's whole definition, as transformers saves it


class TokenizerFile:
    """A bundle's ``tokenizer.json`` run by the tokenizers library alone. transformers' fast tokenizers run
    this same file, so the ids are theirs (tests check it), without importing transformers and torch, which
    take about 2 s of every cold start on ONNX (``finsent predict``, ``mlflow models serve``, the servability
    check's process)."""

    def __init__(self, folder: Path, max_length: int):
        from tokenizers import Tokenizer

        folder = Path(folder)
        self.tokenizer = Tokenizer.from_file(str(folder / TOKENIZER_FILE))
        self.tokenizer.no_padding()  # the file keeps the padding and truncation last used: set ours
        self.tokenizer.enable_truncation(max_length)
        config = folder / "tokenizer_config.json"
        pad_token = json.loads(config.read_text()).get("pad_token") if config.is_file() else None
        pad_id = self.tokenizer.token_to_id(pad_token) if isinstance(pad_token, str) else None
        self.pad_id = pad_id if pad_id is not None else 0  # padded positions are masked: any id gives the same scores

    def ids(self, texts: list[str]) -> list[list[int]]:
        return [encoding.ids for encoding in self.tokenizer.encode_batch(texts)]

    def padded(self, texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
        """-> (input_ids, attention_mask), padded on the right to the longest of ``texts``."""
        ids = self.ids(texts)
        longest = max((len(row) for row in ids), default=0)
        input_ids = np.full((len(ids), longest), self.pad_id, dtype=np.int64)
        attention_mask = np.zeros((len(ids), longest), dtype=np.int64)
        for i, row in enumerate(ids):
            input_ids[i, :len(row)], attention_mask[i, :len(row)] = row, 1
        return input_ids, attention_mask


class OnnxScorer:
    """Class probabilities from an ONNX file (tokens from ``TokenizerFile``), batched as the torch path batches
    (sorted by length), or each row on its own (``row_by_row``). The INT8 model is always scored row by row:
    dynamic quantization scales a matrix product's input by the range of the whole input tensor, so in a batch
    a row's probabilities would depend on the rows beside it (measured on a sample champion: up to 0.6 apart,
    8 of 332 test labels changed). Alone, a text gets the same label whatever else is in the file."""

    def __init__(self, onnx_file: Path, tokenizer_dir: Path, max_length: int, threads: int = 0,
                 row_by_row: bool = False):
        import onnxruntime

        options = onnxruntime.SessionOptions()
        # Batches: ONNX Runtime's threads split each matrix product (0: its default, the physical cores).
        # Row by row: a row is too small to split, so rows run side by side, one thread each (measured on
        # 2 cores: 1.5x the rows/s of one row at a time on two threads).
        options.intra_op_num_threads = 1 if row_by_row else threads
        self.session = onnxruntime.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
        self.tokenizer, self.row_by_row = TokenizerFile(tokenizer_dir, max_length), row_by_row
        self.workers = threads or _usable_cpus()

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        if self.row_by_row:
            return self._row_by_row(texts)
        order = np.argsort([len(t) for t in texts], kind="stable")
        probabilities = None
        for start in range(0, len(texts), batch_size):
            batch = order[start:start + batch_size]
            logits = self._logits(*self.tokenizer.padded([texts[i] for i in batch]))
            if probabilities is None:
                probabilities = np.zeros((len(texts), logits.shape[1]), dtype=np.float64)
            probabilities[batch] = _softmax(logits)
        return probabilities if probabilities is not None else np.zeros((0, 0))

    def _row_by_row(self, texts: list[str]) -> np.ndarray:
        """One tokenizer call for all rows (no padding), one model call per row, ``workers`` calls at a time
        (ONNX Runtime releases the GIL while it runs)."""
        from concurrent.futures import ThreadPoolExecutor

        if not texts:
            return np.zeros((0, 0))
        ids = self.tokenizer.ids(texts)
        with ThreadPoolExecutor(self.workers) as pool:
            logits = list(pool.map(lambda row: self._logits(np.asarray([row]), np.ones((1, len(row)))), ids))
        return _softmax(np.vstack(logits))

    def _logits(self, input_ids, attention_mask) -> np.ndarray:
        return self.session.run(None, {"input_ids": np.asarray(input_ids, dtype=np.int64),
                                       "attention_mask": np.asarray(attention_mask, dtype=np.int64)})[0]


def _usable_cpus() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _softmax(logits: np.ndarray) -> np.ndarray:
    shifted = np.exp(logits - logits.max(axis=1, keepdims=True))
    return (shifted / shifted.sum(axis=1, keepdims=True)).astype(np.float64)


class TorchScorer:
    """The model on PyTorch (a LoRA / AdaLoRA / IA3 adapter folded into its base): the reference every other
    backend is checked against."""

    def __init__(self, model, tokenizer, max_length: int):
        self.model, self.tokenizer, self.max_length = model, tokenizer, max_length

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        from finsent.bundle import predict_proba

        return predict_proba(self.model, self.tokenizer, texts, self.max_length, batch_size)


@dataclass
class Scorer:
    """What a load of a model gives: the backend serving it, its labels, ``predict_proba(texts)``, and a note
    when it runs INT8 on a CPU other than the one it was checked on (``int8_cpu_note``)."""

    backend: str
    labels: list[str]
    engine: OnnxScorer | TorchScorer
    note: str | None = None

    def predict_proba(self, texts: list[str], batch_size: int = 64) -> np.ndarray:
        return self.engine.predict_proba(texts, batch_size)


def load_scorer(bundle_dir: Path, onnx_dir: Path | None = None) -> Scorer:
    """The model of an adapter bundle, served as its ONNX folder's choice says (default folder: ``onnx/``
    inside the bundle); on torch when there is no folder or it chose torch."""
    from finsent.bundle import load_bundle, read_meta
    from finsent.features import TOKENIZER_DIR

    bundle_dir = Path(bundle_dir)
    onnx_dir = Path(onnx_dir) if onnx_dir is not None else bundle_dir / BUNDLE_SUBDIR
    choice = read_choice(onnx_dir)
    if choice is not None and choice.backend in BACKEND_FILES:
        meta = read_meta(bundle_dir)
        engine = OnnxScorer(onnx_dir / BACKEND_FILES[choice.backend], bundle_dir / TOKENIZER_DIR,
                            meta["max_length"], row_by_row=choice.backend == "onnx-int8")
        note = int8_cpu_note(choice.checked_on, this_cpu()) if choice.backend == "onnx-int8" else None
        if note:
            logging.getLogger(__name__).warning(note)  # what mlflow models serve and other pyfunc hosts log
        return Scorer(choice.backend, list(meta["labels"]), engine, note)
    model, tokenizer, meta = load_bundle(bundle_dir, merged=True)
    return Scorer("torch", list(meta["labels"]), TorchScorer(model, tokenizer, meta["max_length"]))


def _macro_f1(labels: np.ndarray, probabilities: np.ndarray) -> float:
    from sklearn.metrics import f1_score

    return float(f1_score(labels, probabilities.argmax(axis=1), average="macro"))


def build(bundle_dir: Path, test_file: Path, settings, out_dir: Path, predictions_out: Path,
          reference: Path | None = None) -> BackendChoice:
    """The onnx stage: export (and quantize) the bundle's model into ``out_dir``, check it against the torch
    model on the test split, and record the backend to serve with (``settings``: ``params.serving``). The torch
    model's test probabilities are read from ``reference`` (the evaluate stage's predictions of the same bundle)
    or, without it, scored here. Only the chosen backend's file is kept; its test predictions go to
    ``predictions_out`` (what the registered model must reproduce when it is loaded: the servability check)."""
    import pandas as pd

    from finsent.bundle import load_bundle, read_meta

    out_dir = Path(out_dir)
    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    meta = read_meta(bundle_dir)
    labels = meta["labels"]
    test = pd.read_parquet(test_file)
    if reference is not None:
        scores = {"torch": _evaluated_probabilities(Path(reference), test, labels)}
    else:
        model, tokenizer, _ = load_bundle(bundle_dir, merged=True)
        scores = {"torch": TorchScorer(model, tokenizer, meta["max_length"]).predict_proba(
            test["text"].astype(str).tolist())}
    choice = _choose(Path(bundle_dir), test, meta, scores, settings, out_dir)
    for file in (FP32_FILE, INT8_FILE):
        if file != BACKEND_FILES.get(choice.backend):
            (out_dir / file).unlink(missing_ok=True)
    (out_dir / CHOICE_FILE).write_text(json.dumps(choice.to_dict(), indent=2, sort_keys=True))
    chosen = scores[choice.backend]
    predictions = test[["id", "label"]].assign(predicted=[labels[i] for i in chosen.argmax(axis=1)])
    for i, name in enumerate(labels):
        predictions[f"prob_{name}"] = chosen[:, i]
    Path(predictions_out).parent.mkdir(parents=True, exist_ok=True)
    predictions.to_parquet(predictions_out, index=False)
    return choice


def _evaluated_probabilities(reference: Path, test, labels: list[str]) -> np.ndarray:
    """The torch model's probabilities as the evaluate stage wrote them (one ``prob_<label>`` column per label),
    in the test split's row order: scoring the test split again on torch would give the same numbers."""
    import pandas as pd

    from finsent.errors import FinsentError

    evaluated = pd.read_parquet(reference)
    columns = [f"prob_{name}" for name in labels]
    missing = [c for c in ["id", *columns] if c not in evaluated.columns]
    if missing or not evaluated["id"].is_unique or set(evaluated["id"]) != set(test["id"]):
        why = f"no column {', '.join(missing)}" if missing else "its rows are not the test split's rows"
        raise FinsentError(f"--reference {reference}: not the evaluation of this test split ({why}); run the "
                           f"evaluate stage on the same model and test split first, or leave out --reference")
    return evaluated.set_index("id").loc[test["id"], columns].to_numpy(dtype=np.float64)


def _choose(bundle_dir: Path, test, meta: dict, scores: dict, settings, out_dir: Path) -> BackendChoice:
    """-> the backend to serve with; adds each scored backend's test probabilities to ``scores``."""
    from finsent.errors import FinsentError
    from finsent.features import TOKENIZER_DIR

    tokenizer = bundle_dir / TOKENIZER_DIR
    if settings.backend == "torch":
        return BackendChoice("torch", "serving.backend is torch")
    if not (tokenizer / TOKENIZER_FILE).is_file():
        return BackendChoice("torch", f"no ONNX scoring: the bundle's tokenizer has no {TOKENIZER_FILE} "
                                      f"(a fast tokenizer's file)")
    fp32_file, int8_file = out_dir / FP32_FILE, out_dir / INT8_FILE
    try:
        export_fp32(bundle_dir, fp32_file)
    except FinsentError as exc:  # e.g. prompt tuning: no weights to fold into the base
        return BackendChoice("torch", f"no ONNX export: {exc}")
    texts = test["text"].astype(str).tolist()
    truth = test["label"].map({name: i for i, name in enumerate(meta["labels"])}).to_numpy()
    reference = scores["torch"]
    recipes = _int8_recipes(fp32_file)
    first_recipe = next(recipes)
    with ThreadPoolExecutor(1) as background:
        # Quantizing is mostly Python, and ONNX Runtime scores with the GIL released: the first INT8 recipe is
        # built while fp32 is scored (about 1 s less on 2 cores). Leaving this block waits for it.
        first_built = (background.submit(quantize_int8, fp32_file, int8_file, first_recipe[1])
                       if settings.backend == "onnx-int8" else None)
        fp32 = scores["onnx"] = OnnxScorer(fp32_file, tokenizer, meta["max_length"]).predict_proba(texts)
        difference = float(np.abs(fp32 - reference).max()) if len(texts) else 0.0
        figures = {"rows": len(texts), "macro_f1": {"torch": _macro_f1(truth, reference),
                                                    "onnx": _macro_f1(truth, fp32)},
                   "onnx_max_probability_diff": difference}
        if difference > ONNX_TOLERANCE:
            return BackendChoice("torch", f"the ONNX model's probabilities differ from torch's by up to "
                                          f"{difference:.2g} (> {ONNX_TOLERANCE:g})", **figures)
        if first_built is None:
            return BackendChoice("onnx", "serving.backend is onnx", **figures)
        first_built.result()
    refusal, figures["checked_on"] = None, this_cpu()  # one CPU for every recipe's check
    for recipe, keep_fp32 in itertools.chain([first_recipe], recipes):
        if recipe != first_recipe[0]:
            quantize_int8(fp32_file, int8_file, keep_fp32)
        int8 = scores["onnx-int8"] = OnnxScorer(int8_file, tokenizer, meta["max_length"],
                                                row_by_row=True).predict_proba(texts)
        figures["macro_f1"]["onnx-int8"] = _macro_f1(truth, int8)
        agreement = float((int8.argmax(axis=1) == reference.argmax(axis=1)).mean()) if len(texts) else 1.0
        drop = figures["macro_f1"]["torch"] - figures["macro_f1"]["onnx-int8"]
        figures.update(int8_label_agreement=agreement, int8_recipe=recipe)
        if agreement < settings.int8_min_label_agreement:
            refusal = (f"INT8 ({recipe}) gives torch's label on {agreement:.1%} of the test rows "
                       f"(< {settings.int8_min_label_agreement:.1%})")
        elif drop > settings.int8_max_macro_f1_drop:
            refusal = (f"INT8 ({recipe}) macro-F1 is {drop * 100:.1f} pt below torch's "
                       f"(> {settings.int8_max_macro_f1_drop * 100:.1f} pt)")
        else:
            return BackendChoice("onnx-int8", f"INT8 ({recipe}) gives torch's label on {agreement:.1%} of the test "
                                              f"rows, macro-F1 {0.0 - drop * 100:+.1f} pt", **figures)
    return BackendChoice("onnx", f"{refusal}: served on ONNX fp32", **figures)


def _int8_recipes(fp32_file: Path) -> Iterator[tuple[str, tuple[str, ...]]]:
    """What is tried, in turn, until one keeps its limits: every projection INT8 (the fastest), then the
    sensitive ones kept fp32 (the graph is read for their names only when the first is refused)."""
    yield "all projections", ()
    sensitive = sensitive_projections(fp32_file)
    if sensitive:
        yield f"{len(sensitive)} sensitive projections fp32", sensitive
