"""PIPA's value head g(x, y<t) = sigmoid(v_t), the policy+head wrapper, and save/load.

The head is a 2-layer MLP (hidden width = model width, paper Section 3) on the final hidden
state of the trunk (after the last norm: what ``lm_head`` sees), so it shares the trunk
with the policy. It is an ordinary module outside the peft wrapper, so peft never freezes
it; it is saved beside the LoRA adapter as ``value_head.safetensors`` + ``value_head.json``.

Alignment: the hidden state at position t-1 predicts token t. ``PolicyWithValueHead``
returns value logits aligned like ``token_logps``: position t holds v_t, the head's output
on the hidden state that predicts ``input_ids[:, t]``; position 0 is 0.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor, nn

# token_logps lives with the models (the training loop uses it without the value
# head); re-exported here, where the head's alignment convention is defined.
from pipa.models import token_logps

__all__ = [
    "VALUE_HEAD_CONFIG",
    "VALUE_HEAD_WEIGHTS",
    "PolicyWithValueHead",
    "ValueHead",
    "load_value_head",
    "save_value_head",
    "token_logps",
]

VALUE_HEAD_WEIGHTS = "value_head.safetensors"
VALUE_HEAD_CONFIG = "value_head.json"


class ValueHead(nn.Module):
    """v = W2 act(W1 h + b1) + b2: (..., d) hidden states -> (...) logits; g = sigmoid(v).

    Activation: GELU (smooth, no dead units, so every first-layer unit gets a gradient from
    the start; the transformer MLPs use the similar SiLU/GELU). Init: the first layer keeps
    PyTorch's default; the last layer has zero bias and a small normal weight with
    std = ``out_std`` / sqrt(d), so v ~ 0 and g starts within about 1% of 0.5 (for
    unit-scale hidden states), while, unlike an all-zero init, the first layer receives a
    nonzero gradient at the very first step. The head computes in its own dtype
    (float32 by default) whatever the trunk's dtype.
    """

    def __init__(self, hidden_size: int, out_std: float = 0.01) -> None:
        super().__init__()
        if hidden_size <= 0:
            raise ValueError(f"ValueHead: hidden_size must be positive, got {hidden_size}")
        self.hidden_size = int(hidden_size)
        self.fc1 = nn.Linear(self.hidden_size, self.hidden_size)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(self.hidden_size, 1)
        with torch.no_grad():
            self.fc2.weight.normal_(0.0, out_std / math.sqrt(self.hidden_size))
            self.fc2.bias.zero_()

    def forward(self, hidden: Tensor) -> Tensor:
        if hidden.shape[-1] != self.hidden_size:
            raise ValueError(
                f"ValueHead: hidden has last dimension {hidden.shape[-1]}, "
                f"expected {self.hidden_size}"
            )
        hidden = hidden.to(self.fc1.weight.dtype)
        return self.fc2(self.act(self.fc1(hidden))).squeeze(-1)


class PolicyWithValueHead(nn.Module):
    """A causal LM (plain or a peft ``PeftModel``) and an optional ``ValueHead``.

    ``forward(input_ids, attention_mask) -> (logits, value_logits | None)``: ``logits`` is
    the LM's (B, T, V) output; ``value_logits`` (B, T, float32) holds at position t the head
    applied to ``hidden_states[-1][:, t-1]`` (the state that predicts token t, after the
    final norm), 0 at position 0 — aligned with ``token_logps``. The head's parameters are
    made trainable here (peft freezes only what it wraps).
    """

    def __init__(self, model: nn.Module, value_head: ValueHead | None = None) -> None:
        super().__init__()
        self.model = model
        self.value_head = value_head
        if value_head is not None:
            value_head.requires_grad_(True)

    def forward(
        self, input_ids: Tensor, attention_mask: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        want_hidden = self.value_head is not None
        out = self.model(
            input_ids=input_ids,
            attention_mask=attention_mask,
            output_hidden_states=want_hidden,
            use_cache=False,
        )
        if not want_hidden:
            return out.logits, None
        hidden = out.hidden_states[-1]
        v = self.value_head(hidden[:, :-1]).float()
        value_logits = torch.cat([v.new_zeros(v.shape[0], 1), v], dim=1)
        return out.logits, value_logits

    @property
    def _no_split_modules(self) -> list[str]:
        """FSDP's units (accelerate's TRANSFORMER_BASED_WRAP reads this): the LM's decoder
        layers, and the value head on its own (float32 beside the trunk's weights)."""
        inner = list(getattr(self.model, "_no_split_modules", None) or [])
        return inner + (["ValueHead"] if self.value_head is not None else [])

    def trainable_parameters(self) -> list[nn.Parameter]:
        """The parameters to optimise: LoRA's (peft leaves only those trainable) + the head's."""
        return [p for p in self.parameters() if p.requires_grad]

    def save_pretrained(self, folder: str | os.PathLike) -> None:
        """``model.save_pretrained(folder)`` and, if present, ``save_value_head``."""
        self.model.save_pretrained(str(folder))
        if self.value_head is not None:
            save_value_head(self.value_head, folder)


def save_value_head(head: ValueHead, folder: str | os.PathLike) -> None:
    """Write ``value_head.safetensors`` and ``value_head.json`` ({"hidden_size": d, ...})
    into ``folder`` (the adapter folder; created if missing)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().to("cpu").contiguous() for k, v in head.state_dict().items()}
    save_file(state, str(folder / VALUE_HEAD_WEIGHTS))
    config = {
        "hidden_size": head.hidden_size,
        "activation": "gelu",
        "dtype": str(head.fc1.weight.dtype).removeprefix("torch."),
    }
    (folder / VALUE_HEAD_CONFIG).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def load_value_head(
    folder: str | os.PathLike, device: str | torch.device | None = None
) -> ValueHead:
    """Rebuild the ``ValueHead`` saved by ``save_value_head`` in ``folder``."""
    folder = Path(folder)
    cfg_path, weights_path = folder / VALUE_HEAD_CONFIG, folder / VALUE_HEAD_WEIGHTS
    for path in (cfg_path, weights_path):
        if not path.is_file():
            raise FileNotFoundError(f"load_value_head: {path} not found")
    config = json.loads(cfg_path.read_text())
    if config.get("activation", "gelu") != "gelu" or "hidden_size" not in config:
        raise ValueError(f"load_value_head: unsupported config in {cfg_path}: {config}")
    state = load_file(str(weights_path))
    head = ValueHead(int(config["hidden_size"]))
    head.to(dtype=state["fc1.weight"].dtype)
    head.load_state_dict(state)
    if device is not None:
        head.to(device)
    return head
