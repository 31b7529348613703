"""PEFT method name -> a base classifier with only the method's parameters trainable.

HF PEFT methods (``lora``, ``adalora``, ``ia3``, ``prompt_tuning``): the classification head is
trained and saved with the adapter (``modules_to_save``). ``head_only``: the frozen backbone with a
trained linear classifier, the classic baseline. ``full``: every weight trained, the reference.
(``prefix_tuning`` is not offered: see ``config.NOT_AVAILABLE``.)
"""

from __future__ import annotations

from pathlib import Path

from finsent.config import PeftParams

HEAD_MODULES = ["classifier"]
PEFT_LIBRARY_METHODS = ("lora", "adalora", "ia3", "prompt_tuning")  # trained and saved through HF PEFT


def load_base_classifier(base_path: Path, labels: list[str]):
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(
        str(base_path), num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)}, use_safetensors=True, trust_remote_code=False)


def peft_config(params: PeftParams, total_steps: int):
    """The HF PEFT config of ``params.method`` (None for head_only / full)."""
    import peft

    s = params.settings
    common = {"task_type": peft.TaskType.SEQ_CLS, "modules_to_save": list(HEAD_MODULES)}
    if params.method == "lora":
        return peft.LoraConfig(r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout,
                               target_modules=_names(s.target_modules), **common)
    if params.method == "adalora":
        return peft.AdaLoraConfig(init_r=s.init_r, target_r=s.target_r, lora_alpha=s.alpha, lora_dropout=s.dropout,
                                  target_modules=_names(s.target_modules), total_step=total_steps,
                                  tinit=int(s.tinit_ratio * total_steps), tfinal=int(s.tfinal_ratio * total_steps),
                                  deltaT=s.delta_t, **common)
    if params.method == "ia3":
        return peft.IA3Config(target_modules=_names(s.target_modules),
                              feedforward_modules=_names(s.feedforward_modules), **common)
    if params.method == "prompt_tuning":
        return peft.PromptTuningConfig(num_virtual_tokens=s.num_virtual_tokens, **common)
    return None


def _names(modules: list[str] | None) -> list[str] | None:
    return sorted(modules) if modules else None  # None: PEFT's default for the architecture


def build_trainable(base_path: Path, labels: list[str], params: PeftParams, total_steps: int):
    """The base classifier wrapped for ``params.method``; ``total_steps`` (optimizer steps) sizes AdaLoRA's budget."""
    model = load_base_classifier(base_path, labels)
    config = peft_config(params, total_steps)
    if config is not None:
        from peft import get_peft_model

        return get_peft_model(model, config)
    if params.method == "head_only":
        for name, parameter in model.named_parameters():
            parameter.requires_grad = name.split(".")[0] in HEAD_MODULES
    return model


def after_optimizer_step(model, params: PeftParams, step: int) -> None:
    """Per-step hook some methods need: AdaLoRA re-allocates its rank budget by importance."""
    if params.method == "adalora":
        model.base_model.update_and_allocate(step)


def after_best_weights_restored(model, params: PeftParams) -> None:
    """AdaLoRA saves only the ranks its final budget kept: mask the restored best-epoch weights the same way,
    so the model in memory is the model on disk."""
    if params.method == "adalora":
        pattern = model.peft_config["default"].rank_pattern
        if pattern:
            model.base_model.rankallocator.mask_using_rank_pattern(model.base_model.model, pattern)


def count_parameters(model) -> dict:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return {"trainable_params": trainable, "total_params": total, "trainable_pct": 100.0 * trainable / total}
