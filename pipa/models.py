"""Model families, tokenizers and loading: one place that knows how a model folder looks.

The built-in world trains two tiny families from scratch (a Llama-style ``ds`` and a
Qwen2-style ``qw``, standing for the paper's Deepseek and Qwen columns). The real setting
points ``path`` at a hub snapshot; both load through ``AutoModelForCausalLM``.
"""

from __future__ import annotations

import os
import string
from collections.abc import Iterable
from pathlib import Path

# A missing local file must fail fast, never wait on a hub that cannot be reached.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

import torch

from pipa.config_types import Arch

SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>"}

# Architecture per family. Two genuinely different transformers classes, so the
# "two families" of the paper differ in code path as well as in pretraining data.
FAMILY_CONFIG = {"llama": "LlamaConfig", "qwen2": "Qwen2Config"}


def train_tokenizer(texts: Iterable[str], vocab_size: int, folder: str | os.PathLike):
    """Train a byte-level-free BPE on ``texts`` and save it as a HF fast tokenizer.

    Digits are split one per token (arithmetic on multi-digit tokens is much harder for a
    tiny model), and the pre-tokenizer keeps spaces and newlines as their own pieces so the
    character offsets used for step labels are exact.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Digits(individual_digits=True),
            pre_tokenizers.Split(pattern=" ", behavior="isolated"),
            pre_tokenizers.Split(pattern="\n", behavior="isolated"),
            pre_tokenizers.Punctuation(behavior="isolated"),
        ]
    )
    tok.decoder = decoders.Fuse()
    specials = ["<pad>", "<eos>", "<bos>", "<unk>"]
    # Every printable character is in the vocabulary whatever the corpus: a family
    # pretrained in another solution style (no "=" in its corpus) must still be able to
    # read and write the alignment data's style, not map it to <unk>.
    alphabet = sorted(set(string.printable) - set("\t\r\x0b\x0c"))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials, initial_alphabet=alphabet,
        show_progress=False,
    )
    tok.train_from_iterator(texts, trainer=trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", **SPECIAL_TOKENS)
    fast.save_pretrained(str(folder))
    return fast


def load_tokenizer(folder: str | os.PathLike):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    if tok.pad_token is None:  # real instruct models often ship without one
        tok.pad_token = tok.eos_token
    return tok


def build_model(family: str, arch: Arch, vocab_size: int, tokenizer, seed: int):
    """A randomly initialised causal LM of the given family and shape (params'
    ``model_families.<m>.arch``), deterministic from ``seed``."""
    import transformers

    if family not in FAMILY_CONFIG:
        raise ValueError(f"unknown model family {family!r}; valid: {sorted(FAMILY_CONFIG)}")
    config_cls = getattr(transformers, FAMILY_CONFIG[family])
    config = config_cls(
        vocab_size=vocab_size,
        hidden_size=arch.hidden_size,
        intermediate_size=arch.intermediate_size,
        num_hidden_layers=arch.num_layers,
        num_attention_heads=arch.num_heads,
        num_key_value_heads=arch.num_heads if arch.num_kv_heads is None else arch.num_kv_heads,
        max_position_embeddings=arch.max_len,
        tie_word_embeddings=True,
        pad_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        bos_token_id=tokenizer.bos_token_id,
    )
    torch.manual_seed(seed)
    model = transformers.AutoModelForCausalLM.from_config(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    return model


def load_model(folder: str | os.PathLike, dtype: str = "float32"):
    """Load a saved causal LM (full weights) read-only from a local folder."""
    from transformers import AutoModelForCausalLM

    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(
            f"{folder}: no config.json; run the stage that produces it (dvc repro) or fix the path"
        )
    return AutoModelForCausalLM.from_pretrained(
        str(folder), local_files_only=True, dtype=getattr(torch, dtype)
    )


def count_parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def encode_example(tokenizer, prompt: str, response: str, add_eos: bool = True):
    """Token ids of prompt + response (+EOS) and the response's character offsets.

    Prompt and response are tokenized separately so the boundary is exact and no response
    token straddles the prompt; offsets are relative to the response text, with ``(0, 0)``
    for the appended EOS (it inherits the last step's label, see labels.token_labels).
    """
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    enc = tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)
    response_ids = list(enc["input_ids"])
    offsets = [tuple(o) for o in enc["offset_mapping"]]
    if add_eos:
        response_ids.append(tokenizer.eos_token_id)
        offsets.append((0, 0))
    return list(prompt_ids), response_ids, offsets


def token_logps(logits: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
    """Per-token log pi(y_t | x, y<t), (B, T, V) logits + (B, T) ids -> (B, T) float32.

    Position t holds the log-prob of ``input_ids[:, t]`` under ``logits[:, t-1]`` (the
    logits that predict it); position 0 has no prediction and is 0. Computed as
    gathered logit - logsumexp in float32.
    """
    if logits.dim() != 3 or input_ids.dim() != 2 or logits.shape[:2] != input_ids.shape:
        raise ValueError(
            f"token_logps: logits {tuple(logits.shape)} and input_ids "
            f"{tuple(input_ids.shape)} must be (B, T, V) and (B, T)"
        )
    batch, length = input_ids.shape
    out = torch.zeros(batch, length, dtype=torch.float32, device=logits.device)
    if length < 2:
        return out
    pred = logits[:, :-1].float()
    target = input_ids[:, 1:].long().unsqueeze(-1)
    picked = torch.gather(pred, -1, target).squeeze(-1)
    out[:, 1:] = picked - torch.logsumexp(pred, dim=-1)
    return out
