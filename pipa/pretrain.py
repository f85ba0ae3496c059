"""Base models of the built-in world: a tokenizer and a causal LM trained from scratch.

Its own module so the (slow) base stages depend only on what they run.
"""

from __future__ import annotations

import time
from pathlib import Path

import torch

from pipa.config_types import Config
from pipa.io import atomic_path, write_json


def pretrain_bases(cfg: Config, world_dir: str | Path, out_root: str | Path,
                   live_root: str | Path) -> list[dict]:
    """Every family of ``models`` pretrained (``pretrain_base``), side by side.

    The families are independent jobs: with ``runtime.workers: 2`` they train at once in
    two forked single-thread processes, which on two cores is 1.47x the throughput of one
    two-thread process training them one after the other (the models are too small for two
    threads to split a matmul well; ``benchmarks/bench_pretrain_workers.py``). ``out_root/<model>`` holds each
    model; ``out_root`` appears whole or not at all. Training curves go to
    ``live_root/<model>/dvclive``.
    """
    from pipa.parallel import fork_map, worker_plan

    models = list(cfg.models)
    threads, workers = cfg.runtime.threads, cfg.runtime.workers
    per_job = worker_plan(threads, workers, len(models))[1]  # all threads when inline
    with atomic_path(out_root) as tmp:
        tmp.mkdir()
        jobs = [(m, str(tmp / m), str(Path(live_root) / m / "dvclive")) for m in models]
        return fork_map(lambda job: pretrain_base(cfg, job[0], world_dir, job[1], job[2],
                                                  threads=per_job),
                        jobs, threads=threads, workers=workers)


def pretrain_base(cfg: Config, model_name: str, world_dir: str | Path, out_dir: str | Path,
                  live_dir: str | Path | None = None, threads: int | None = None) -> dict:
    """Tokenizer + causal LM trained from scratch on the family's corpus (every token).

    ``threads``: torch threads of this job (default ``runtime.threads``); a forked worker
    passes its share.
    """
    from pipa.batching import device_of
    from pipa.hardware import machine, resolve_precision, setup_runtime
    from pipa.live import forked_live
    from pipa.models import build_model, count_parameters, train_tokenizer
    from pipa.training import fit, make_accelerator

    fam, pcfg = cfg.family(model_name), cfg.pretrain
    # A base model of its own seed (pretrain.seed) measures the base model's variation
    # while the data (world, sampling, pairing) stays that of `seed`.
    seed = cfg.seed if pcfg.seed is None else pcfg.seed
    setup_runtime(threads or cfg.runtime.threads, seed)
    docs = (Path(world_dir) / f"corpus_{model_name}.txt").read_text().split("\x00")
    started = time.perf_counter()
    with atomic_path(out_dir) as tmp:
        tok = train_tokenizer(docs[:5000], cfg.tokenizer.vocab_size, tmp)
        model = build_model(fam.family, fam.arch, len(tok), tok, seed)
        stream: list[int] = []
        for doc in docs:
            stream.extend(tok(doc, add_special_tokens=False)["input_ids"])
            stream.append(tok.eos_token_id)
        data = torch.tensor(stream, dtype=torch.long)
        seq_len, bsz = pcfg.seq_len, pcfg.batch_size
        gen = torch.Generator().manual_seed(seed)
        n_steps = pcfg.steps

        def step_fn(step: int, net):
            # Packed random windows of the token stream: no padding, loss on every token.
            starts = torch.randint(0, len(data) - seq_len - 1, (bsz,), generator=gen)
            batch = torch.stack([data[s : s + seq_len] for s in starts.tolist()])
            batch = batch.to(device_of(net))  # the GPU under runtime.device
            loss = net(input_ids=batch, labels=batch).loss
            return loss, {}, [f"window@{s}" for s in starts.tolist()], batch.numel()

        model.train()
        live = forked_live(Path(live_dir)) if live_dir else None
        accelerator = make_accelerator(1, device=cfg.runtime.device)
        precision = resolve_precision(cfg.runtime.mixed_precision, accelerator.device)
        last = fit(model.parameters(), step_fn, n_steps, lr=pcfg.lr, warmup=pcfg.warmup,
                   min_lr_ratio=pcfg.min_lr_ratio, weight_decay=pcfg.weight_decay, live=live,
                   desc=f"pretrain {model_name}", model=model, accelerator=accelerator,
                   mixed_precision=precision)
        if live is not None:
            live.end()
        model.save_pretrained(tmp)
        summary = {
            "model": model_name, "family": fam.family, "parameters": count_parameters(model),
            "vocab_size": len(tok), "corpus_tokens": len(stream), "steps": n_steps, "seed": seed,
            "final_loss": last["loss"], "precision": precision, "machine": machine(),
        }
        # No wall-clock time in the cached folder: a re-run with the same numbers then has
        # the same hash, so DVC does not re-run everything downstream of the base models.
        write_json(tmp / "pipa_train.json", summary)
    return {**summary, "seconds": round(time.perf_counter() - started, 1)}
