"""How the classifier reads a sentence: BERT's first-token (CLS) pooler, or the mean of all tokens.

A sentence-transformer base such as all-MiniLM-L6-v2 was trained to mean-pool its token vectors; its
CLS pooler was never tuned. ``mean`` swaps the base's pooler for one that averages the last hidden
states over the attention mask and then applies the same ``dense`` + tanh, so the module names (and
the saved head weights, ``pooler.dense``) stay those of the plain model and every loader (bundle,
merged export, pyfunc) gets the same logits by applying the same swap.
"""

from __future__ import annotations

POOLINGS = ("cls", "mean")
CONFIG_KEY = "finsent_pooling"  # recorded in a model's config.json so a merged export reloads the same way


def _mean_pooler_class():
    import torch

    class MaskedMeanPooler(torch.nn.Module):
        """Mean of the token vectors where the attention mask is 1, then the original dense + tanh."""

        def __init__(self, original):
            super().__init__()
            self.dense = original.dense
            self.activation = getattr(original, "activation", torch.nn.Tanh())
            self.attention_mask = None  # set by the backbone's forward pre-hook, read once

        def forward(self, hidden_states):
            mask, self.attention_mask = self.attention_mask, None
            if mask is None or mask.shape[:2] != hidden_states.shape[:2]:
                pooled = hidden_states.mean(dim=1)
            else:
                weights = mask.to(hidden_states.dtype).unsqueeze(-1)
                pooled = (hidden_states * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
            return self.activation(self.dense(pooled))

    return MaskedMeanPooler


def apply_pooling(model, pooling: str):
    """Make a ``*ForSequenceClassification`` model pool as asked (in place) -> the model."""
    from finsent.errors import FinsentError

    if pooling not in POOLINGS:
        raise FinsentError(f"params: model.pooling must be one of {', '.join(POOLINGS)}, got {pooling!r}")
    model.config.update({CONFIG_KEY: pooling})
    if pooling == "cls":
        return model
    backbone = getattr(model, model.base_model_prefix, None)
    pooler = getattr(backbone, "pooler", None)
    if pooler is None or not hasattr(pooler, "dense"):
        raise FinsentError(f"params: model.pooling: mean needs a base with a BERT-style pooler; "
                           f"{type(model).__name__} has none: use model.pooling: cls")
    mean_pooler = _mean_pooler_class()(pooler)
    backbone.pooler = mean_pooler

    def capture_mask(_module, args, kwargs):
        mask = kwargs.get("attention_mask")
        if mask is None and len(args) > 1:
            mask = args[1]
        mean_pooler.attention_mask = mask

    backbone.register_forward_pre_hook(capture_mask, with_kwargs=True)
    return model


def pooling_of(config) -> str:
    """The pooling a saved model was trained with (``cls`` for models saved before pooling was a choice)."""
    return getattr(config, CONFIG_KEY, None) or "cls"
