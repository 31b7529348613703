"""PEFT method name -> a base classifier with only the method's parameters trainable.

HF PEFT methods (``lora``, ``adalora``, ``ia3``, ``prompt_tuning``): the classification head
(``peft.head_modules``: the classifier and BERT's pooler / DistilBERT's pre-classifier) is trained and saved with the adapter
(``modules_to_save``). ``head_only``: the frozen backbone with that trained head, the classic baseline.
``full``: every weight trained, the reference.
(``prefix_tuning`` is not offered: see ``config.NOT_AVAILABLE``.)
"""

from __future__ import annotations

from pathlib import Path

from finsent.config import PeftParams

PEFT_LIBRARY_METHODS = ("lora", "adalora", "ia3", "prompt_tuning")  # trained and saved through HF PEFT


def load_base_classifier(base_path: Path, labels: list[str], pooling: str = "cls"):
    """The base with a fresh classification head over ``labels``, pooling as ``model.pooling`` says. In fp32
    whatever the stored dtype (transformers 5 would keep a bf16/fp16 checkpoint's dtype): training, its optimizer
    state and the adapter stay fp32; a GPU adds bf16 autocast on top."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from finsent.pooling import apply_pooling

    model = AutoModelForSequenceClassification.from_pretrained(
        str(base_path), num_labels=len(labels), id2label=dict(enumerate(labels)),
        label2id={name: i for i, name in enumerate(labels)}, use_safetensors=True, trust_remote_code=False,
        dtype=torch.float32)
    return apply_pooling(model, pooling)


def head_modules(model, params: PeftParams) -> dict:
    """The ``peft.head_modules`` this base has, as module path -> module; a name matches the end of a path
    (``pooler.dense`` is ``bert.pooler.dense``)."""
    found = {path: module for path, module in model.named_modules()
             if any(path == name or path.endswith("." + name) for name in params.head_modules)}
    if not found:
        from finsent.errors import FinsentError

        tops = ", ".join(name for name, _ in model.named_children())
        raise FinsentError(f"params: none of peft.head_modules {params.head_modules} is a module of the base "
                           f"(its top-level modules: {tops}); list its classification head")
    return found


def peft_config(params: PeftParams, total_steps: int, head: list[str], n_layers: int | None = None):
    """The HF PEFT config of ``params.method`` (None for head_only / full); ``head`` is trained in full;
    ``n_layers``: the base's encoder depth, which negative ``peft.lora.layers`` count down from."""
    import peft

    s = params.settings
    common = {"task_type": peft.TaskType.SEQ_CLS, "modules_to_save": sorted(head)}
    if params.method == "lora":
        return peft.LoraConfig(r=s.r, lora_alpha=s.alpha, lora_dropout=s.dropout,
                               target_modules=_names(s.target_modules),
                               layers_to_transform=encoder_layers(s.layers, n_layers), **common)
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


def encoder_layers(layers: list[int] | None, n_layers: int | None) -> list[int] | None:
    """``peft.lora.layers`` as PEFT's layer indices: negative ones count from the top (-1 = the last layer), so
    ``[-4, -3, -2, -1]`` means the top four layers of any base."""
    if layers is None:
        return None
    from finsent.errors import FinsentError

    if not layers:
        raise FinsentError("params: peft.lora.layers is empty; list encoder layers (e.g. [-4, -3, -2, -1]: the top "
                           "four) or use null for every layer")
    if n_layers is None:  # a base whose config does not say its depth: PEFT matches the indices as given
        if any(layer < 0 for layer in layers):
            raise FinsentError("params: peft.lora.layers counts from the top (negative), but this base's config does "
                               "not say how many layers it has; list them from 0")
        return sorted(set(layers))
    outside = sorted({layer for layer in layers if not -n_layers <= layer < n_layers})
    if outside:
        raise FinsentError(f"params: peft.lora.layers {outside} are not layers of this base; its encoder has "
                           f"{n_layers} (0 to {n_layers - 1}, or -{n_layers} to -1 from the top)")
    return sorted({layer % n_layers for layer in layers})


def _linear_names(model) -> list[str]:
    import torch

    return sorted({path.rsplit(".", 1)[-1] for path, module in model.named_modules()
                   if isinstance(module, torch.nn.Linear)})


def build_trainable(base_path: Path, labels: list[str], params: PeftParams, total_steps: int, pooling: str = "cls"):
    """The base classifier wrapped for ``params.method``; ``total_steps`` (optimizer steps) sizes AdaLoRA's budget."""
    model = load_base_classifier(base_path, labels, pooling)
    head = head_modules(model, params) if params.method != "full" else {}  # full trains everything anyway
    config = peft_config(params, total_steps, list(head), getattr(model.config, "num_hidden_layers", None))
    if config is not None:
        from peft import get_peft_model
        from peft.utils.error import NoMatchingPeftModuleError

        from finsent.train.dropout import use_word_dropout

        try:
            model = get_peft_model(model, config)
        except NoMatchingPeftModuleError:
            from finsent.errors import FinsentError

            raise FinsentError(f"params: peft.{params.method}.target_modules {params.settings.target_modules} match "
                               f"no layer of this base; its linear layers are named {', '.join(_linear_names(model))}"
                               ) from None
        use_word_dropout(model)  # LoRA's dropout masks drawn 16 bits per element: a quarter of a step on CPU
        return model
    if params.method == "head_only":
        model.requires_grad_(False)
        for module in head.values():
            module.requires_grad_(True)
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
