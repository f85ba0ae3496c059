"""The prior's per-token log-probs of every training solution, computed once and cached
(safetensors) for every alignment cell: p in r_t = log f_t - log p_t."""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch

from pipa.config_types import Config
from pipa.io import atomic_path
from pipa.model_io import load_policy_model, prompt_formatter


@torch.no_grad()
def response_logps(model, tok, examples, batch_size: int,
                   mixed_precision: str = "fp32") -> dict[str, torch.Tensor]:
    """log p(y_t | x, y_<t) of every response token, keyed by solution id, computed in the
    precision the alignment's policy forward uses (``autocast(mixed_precision)``), so the
    policy/prior log-ratio starts at zero up to rounding."""
    from tqdm import tqdm

    from pipa.batching import collate, device_of, to_device
    from pipa.hardware import autocast
    from pipa.training import forward_logps
    from pipa.value_head import PolicyWithValueHead

    policy = PolicyWithValueHead(model, None).eval()
    device = device_of(model)
    out: dict[str, torch.Tensor] = {}
    for i in tqdm(range(0, len(examples), batch_size), desc="prior log-probs", mininterval=2):
        exs = examples[i : i + batch_size]
        batch = to_device(collate(exs, tok.pad_token_id), device)
        with autocast(mixed_precision, device):
            logps, _ = forward_logps(policy, batch)
        for row, e in enumerate(exs):
            out[e.sid] = logps[row][batch["response_mask"][row]].cpu().clone().contiguous()
    return out


def compute_prior(cfg: Config, model_name: str, prior_model_dir: str | Path,
                  alphamath_path: str | Path, out_file: str | Path) -> dict:
    """Cache the prior's per-token log-probs of every solution once, for every cell."""
    from safetensors.torch import save_file

    from pipa import alphamath
    from pipa.batching import device_of
    from pipa.examples import build_examples
    from pipa.hardware import machine, resolve_precision, setup_runtime
    from pipa.labels import solutions_records

    setup_runtime(cfg.runtime.threads, cfg.seed)
    records = solutions_records(alphamath.read(alphamath_path))  # bad data stops it first
    tok, model = load_policy_model(cfg, model_name, prior_model_dir, on_device=True)
    fmt = prompt_formatter(cfg, model_name, tok)
    max_len = cfg.family(model_name).arch.max_len
    examples, skipped = build_examples(records, tok, fmt, max_len)
    started = time.perf_counter()
    precision = resolve_precision(cfg.runtime.mixed_precision, device_of(model))
    logps = response_logps(model, tok, examples, cfg.eval.batch_size, precision)
    # What computed them travels with them, as one metadata entry: safetensors writes its
    # metadata map in hash order, so several keys would not give the same bytes twice.
    made_by = json.dumps({"precision": precision, **machine()}, sort_keys=True)
    with atomic_path(out_file) as tmp:
        save_file(logps, str(tmp), metadata={"pipa": made_by})
    return {"solutions": len(logps), "skipped": skipped, "precision": precision,
            "seconds": round(time.perf_counter() - started, 1)}
