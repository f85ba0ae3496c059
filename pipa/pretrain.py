"""Base models of the built-in world: a tokenizer and a causal LM trained from scratch.

Its own module so the (slow) base stages depend only on what they run.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from pipa import config as C
from pipa.io import atomic_path, write_json


def pretrain_base(params: dict, model_name: str, world_dir: str | Path, out_dir: str | Path,
                  live_dir: str | Path | None = None) -> dict:
    """Tokenizer + causal LM trained from scratch on the family's corpus (every token)."""
    from dvclive import Live

    from pipa.models import build_model, count_parameters, train_tokenizer
    from pipa.training import fit, make_accelerator, setup_runtime

    fam = C.get(params, f"model_families.{model_name}")
    pcfg = C.get(params, "pretrain")
    seed = int(C.get(params, "seed"))
    setup_runtime(int(C.get(params, "runtime.threads")), seed)
    docs = (Path(world_dir) / f"corpus_{model_name}.txt").read_text().split("\x00")
    started = time.perf_counter()
    with atomic_path(out_dir) as tmp:
        tok = train_tokenizer(docs[:5000], int(C.get(params, "tokenizer.vocab_size")), tmp)
        model = build_model(fam["family"], fam["arch"], len(tok), tok, seed)
        stream: list[int] = []
        for doc in docs:
            stream.extend(tok(doc, add_special_tokens=False)["input_ids"])
            stream.append(tok.eos_token_id)
        data = torch.tensor(stream, dtype=torch.long)
        seq_len, bsz = int(pcfg["seq_len"]), int(pcfg["batch_size"])
        gen = torch.Generator().manual_seed(seed)
        n_steps = int(pcfg["steps"])

        def step_fn(step: int, net):
            # Packed random windows of the token stream: no padding, loss on every token.
            starts = torch.randint(0, len(data) - seq_len - 1, (bsz,), generator=gen)
            batch = torch.stack([data[s : s + seq_len] for s in starts.tolist()])
            batch = batch.to(next(net.parameters()).device)  # the GPU under runtime.device
            loss = net(input_ids=batch, labels=batch).loss
            return loss, {}, [f"window@{s}" for s in starts.tolist()], batch.numel()

        model.train()
        live = Live(str(live_dir), save_dvc_exp=False, dvcyaml=None, report=None) \
            if live_dir else None
        last = fit(model.parameters(), step_fn, n_steps, lr=float(pcfg["lr"]),
                   warmup=int(pcfg["warmup"]), min_lr_ratio=float(pcfg["min_lr_ratio"]),
                   weight_decay=float(pcfg.get("weight_decay", 0.0)), live=live,
                   desc=f"pretrain {model_name}", model=model,
                   accelerator=make_accelerator(1, device=C.get(params, "runtime.device")),
                   mixed_precision=C.get(params, "runtime.mixed_precision"))
        if live is not None:
            live.end()
        model.save_pretrained(tmp)
        summary = {
            "model": model_name, "family": fam["family"], "parameters": count_parameters(model),
            "vocab_size": len(tok), "corpus_tokens": len(stream), "steps": n_steps,
            "final_loss": last["loss"], "seconds": round(time.perf_counter() - started, 1),
        }
        write_json(tmp / "pipa_train.json", summary)
    return summary
