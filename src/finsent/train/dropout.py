"""LoRA's dropout with a mask a sixth as costly to draw: torch's Bernoulli keep mask, 16 random bits per element.

On CPU torch draws a dropout mask one element at a time, on one thread (``bernoulli_``). A LoRA adapter on every
linear layer draws one mask per adapted layer, on inputs up to four times the hidden size, so with the default
recipe those draws are about a quarter of a training step. ``WordDropout`` takes one 64-bit random word from
torch's generator per four elements and keeps an element when its 16 bits clear the threshold: the same
independent Bernoulli(1 - p) mask and the same 1 / (1 - p) scaling, with p rounded to a multiple of 1/65,536.
It draws from torch's global generator, so a seeded run gives the same masks every time. On a GPU it is torch's
own dropout (fast there).
"""

from __future__ import annotations

import torch

_LEVELS = 1 << 16  # the values one 16-bit draw takes
_WORD = torch.iinfo(torch.int64)


class WordDropout(torch.nn.Module):
    def __init__(self, p: float):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"dropout probability must be in [0, 1), got {p}")
        self.p = p
        self.dropped_levels = min(round(p * _LEVELS), _LEVELS - 1)  # dropped: a draw among the lowest ones
        self.scale = _LEVELS / (_LEVELS - self.dropped_levels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.dropped_levels == 0:
            return x
        if x.device.type != "cpu":
            return torch.nn.functional.dropout(x, self.p, training=True)
        n = x.numel()
        words = torch.randint(_WORD.min, _WORD.max, ((n + 3) // 4,), dtype=torch.int64)
        draws = words.view(torch.int16)[:n].view(x.shape)  # uniform on [-32768, 32767]
        keep = (draws >= self.dropped_levels - _LEVELS // 2).to(x.dtype).mul_(self.scale)
        return x * keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


def use_word_dropout(model) -> None:
    """Swap every LoRA dropout (``lora_dropout`` of PEFT's LoRA and AdaLoRA layers) for ``WordDropout`` with the
    same p. The adapter's weights and what PEFT saves are unchanged: dropout has none."""
    for module in model.modules():
        dropouts = getattr(module, "lora_dropout", None)
        if isinstance(dropouts, torch.nn.ModuleDict):
            for name, layer in dropouts.items():
                if type(layer) is torch.nn.Dropout:
                    dropouts[name] = WordDropout(layer.p)
