"""Fine-tuning on correct solutions: SFT, and the priors of Table 3 (the same loss on
other subsets). The one training loop is ``pipa.training.fit``; the loss is SFT's NLL
(``pipa.loss_terms.sft_loss``), so an edit to a preference loss never re-runs these."""

from __future__ import annotations

import time
from pathlib import Path

import torch

from pipa.config_types import Config
from pipa.io import write_json
from pipa.model_io import load_policy_model, prompt_formatter, with_lora


def finetune(cfg: Config, model_name: str, init_dir: str | Path, records: list[dict],
             section: str, out_dir: str | Path, live_dir: str | Path | None = None) -> dict:
    """Fine-tuning on responses of ``records`` (SFT, or the Table 3 priors).

    ``<section>.lora.enabled``: LoRA adapters (r, alpha, dropout, target_modules) instead of
    every weight; the adapters are merged into the weights before saving
    (``merge_and_unload``), so ``out_dir`` is always a plain model folder that the prior,
    align and eval stages load as before. ``<section>.batch_size`` is the global batch,
    run as ``<section>.grad_accum`` micro-batches per optimizer step on each process
    (``pipa.training``); under ``accelerate launch`` only the main process writes.
    """
    from dvclive import Live

    from pipa.batching import batch_plan, collate, device_of, steps_for, to_device
    from pipa.examples import build_examples
    from pipa.hardware import machine, resolve_precision, setup_runtime
    from pipa.loss_terms import LossParams, Responses, UnpairedBatch, sft_loss
    from pipa.training import (
        fit,
        forward_logps,
        full_weights_holder,
        main_process_path,
        make_accelerator,
    )
    from pipa.value_head import PolicyWithValueHead

    fcfg = cfg.finetune(section)
    seed = cfg.seed
    setup_runtime(cfg.runtime.threads, seed)
    tok, model = load_policy_model(cfg, model_name, init_dir)
    fmt = prompt_formatter(cfg, model_name, tok)
    max_len = cfg.family(model_name).arch.max_len
    examples, skipped = build_examples(records, tok, fmt, max_len)
    if not examples:
        raise ValueError(
            f"{section} {model_name}: no training solutions (of {len(records)} records, "
            f"{skipped} skipped); the sampling model solved nothing - train the base model "
            "longer (pretrain.steps) or set sampling.include_gold: true"
        )
    bsz, grad_accum = fcfg.batch_size, fcfg.grad_accum
    accelerator = make_accelerator(grad_accum, bsz, cfg.runtime.device)
    precision = resolve_precision(cfg.runtime.mixed_precision, accelerator.device)
    n_steps = steps_for(len(examples), bsz, fcfg.epochs)
    batches = batch_plan(examples, "unpaired", False, bsz, n_steps, seed, grad_accum=grad_accum,
                         num_processes=accelerator.num_processes,
                         process_index=accelerator.process_index)
    lora = fcfg.lora
    if lora.enabled:
        model = with_lora(model, lora)
    policy = PolicyWithValueHead(model, None)
    holder, gather = full_weights_holder(accelerator, policy)
    started = time.perf_counter()

    nll_per_token = LossParams(reduction="mean")  # each sequence's NLL over its tokens

    def step_fn(step: int, net=None):
        exs = next(batches)
        batch = to_device(collate(exs, tok.pad_token_id), device_of(policy))
        logps, _ = forward_logps(policy if net is None else net, batch)
        responses = Responses(policy_logps=logps, prior_logps=batch["prior_logps"],
                              mask=batch["response_mask"])
        loss, _ = sft_loss(UnpairedBatch(responses, torch.ones_like(batch["is_correct"])),
                           nll_per_token)
        return loss, {}, [e.rid for e in exs], int(batch["attention_mask"].sum())

    model.train()
    with main_process_path(accelerator, out_dir) as tmp:
        live = Live(str(live_dir), save_dvc_exp=False, dvcyaml=None, report=None) \
            if live_dir and accelerator.is_main_process else None
        last = fit(policy.parameters(), step_fn, n_steps, lr=fcfg.lr,
                   warmup=fcfg.warmup, min_lr_ratio=fcfg.min_lr_ratio,
                   live=live, desc=f"{section} {model_name}", grad_accum=grad_accum,
                   accelerator=accelerator, model=policy, mixed_precision=precision,
                   on_trained=gather)
        if live is not None:
            live.end()
        # Wall time stays out of the cached output: same seed, same bytes.
        summary = {"model": model_name, "section": section, "examples": len(examples),
                   "skipped": skipped, "steps": n_steps, "final_loss": last["loss"],
                   "precision": precision, "machine": machine()}
        accelerator.wait_for_everyone()
        if accelerator.is_main_process:
            trained = holder.model  # full weights, also under FSDP
            if lora.enabled:
                trained = trained.merge_and_unload()
            trained.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            write_json(tmp / "pipa_train.json", summary)
    return {**summary, "seconds": round(time.perf_counter() - started, 1)}
