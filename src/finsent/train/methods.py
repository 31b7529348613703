"""PEFT method name -> a base classifier with only the method's parameters trainable.

``lora``: HF PEFT LoRA on the attention projections; the classification head is trained and
saved with the adapter (``modules_to_save``). ``head_only``: the frozen backbone with a trained
linear classifier, the classic baseline.
"""

from __future__ import annotations

from pathlib import Path

from finsent.config import PeftParams
from finsent.errors import FinsentError

METHODS = ("lora", "head_only")
HEAD_MODULES = ["classifier"]


def load_base_classifier(base_path: Path, labels: list[str]):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(
        str(base_path), num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)}, use_safetensors=True, trust_remote_code=False)


def peft_config(params: PeftParams):
    from peft import LoraConfig, TaskType

    if params.method == "lora":
        return LoraConfig(task_type=TaskType.SEQ_CLS, r=params.lora_r, lora_alpha=params.lora_alpha,
                          lora_dropout=params.lora_dropout, target_modules=list(params.lora_target_modules),
                          modules_to_save=list(HEAD_MODULES))
    return None


def build_trainable(base_path: Path, labels: list[str], params: PeftParams):
    if params.method not in METHODS:
        raise FinsentError(f"unknown peft.method '{params.method}'; available: {', '.join(METHODS)}")
    model = load_base_classifier(base_path, labels)
    config = peft_config(params)
    if config is not None:
        from peft import get_peft_model

        return get_peft_model(model, config)
    for name, parameter in model.named_parameters():
        parameter.requires_grad = name.split(".")[0] in HEAD_MODULES
    return model


def count_parameters(model) -> dict:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_params": trainable, "total_params": total, "trainable_pct": 100.0 * trainable / total}
