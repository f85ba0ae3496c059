"""One alignment cell: an algorithm × model × seed trained on one setting's labelled data,
once per learning rate of the grid, keeping the lr best on validation.

``align_cell`` reads the cell's inputs once (``prepare_cell``), trains and validates each
candidate (``train_candidate``, in forked workers or inline: the same numbers either way,
``pipa.parallel``) and writes the chosen one whole (``pipa.io.atomic_path``).
"""

from __future__ import annotations

import copy
import functools
import json
import shutil
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from pipa import config as C
from pipa.config_types import Align, Config
from pipa.evaluation import eval_problems, evaluate_model
from pipa.io import read_jsonl, write_json
from pipa.live import forked_live
from pipa.loss_terms import LossParams, PairedBatch, Responses, UnpairedBatch
from pipa.model_io import load_policy_model, prompt_formatter, with_lora
from pipa.world import subsample


@dataclass
class Cell:
    """What every lr candidate of a cell shares: the same start, data, batches and prior."""

    cfg: Config
    algorithm: str
    model_name: str
    seed: int
    spec: object                 # pipa.losses.AlgorithmSpec
    tok: object
    sft_model: torch.nn.Module
    sft_dir: str
    examples: int
    skipped: int
    plan: list                   # the batches, planned once: every candidate sees them
    prior: dict                  # solution id -> the prior's per-token log-probs
    mismatched_prior: dict | None  # KTO's reference on the mismatched pairs of the plan
    hparams: LossParams          # the loss hyperparameters, typed (align.beta, ...)
    val: list[dict]              # validation problems (never test) that pick the lr
    accelerator: object
    precision: str
    n_steps: int
    batch_size: int
    grad_accum: int


def prepare_cell(cfg: Config, *, algorithm: str, model_name: str, seed: int,
                 labels_path: str | Path, prior_path: str | Path, sft_dir: str | Path,
                 world_dir: str | Path) -> Cell:
    """Load the SFT model, the labelled data and the cached prior, and plan the batches."""
    from safetensors.torch import load_file

    from pipa.batching import batch_plan, mismatched_examples, steps_for
    from pipa.examples import build_examples
    from pipa.hardware import resolve_precision, setup_runtime
    from pipa.losses import ALGORITHMS
    from pipa.prior import response_logps
    from pipa.training import make_accelerator

    if algorithm not in ALGORITHMS:
        raise C.ConfigError(f"unknown algorithm {algorithm!r}; valid: {sorted(ALGORITHMS)}")
    spec = ALGORITHMS[algorithm]
    acfg = cfg.align
    setup_runtime(cfg.runtime.threads, seed)
    tok, sft_model = load_policy_model(cfg, model_name, sft_dir)
    fmt = prompt_formatter(cfg, model_name, tok)
    max_len = cfg.family(model_name).arch.max_len
    records = read_jsonl(labels_path)
    examples, skipped = build_examples(records, tok, fmt, max_len)
    if not examples:
        raise ValueError(
            f"{labels_path}: no record to train {algorithm} on ({len(records)} records, "
            f"skipped {skipped} by the context limit model_families.{model_name}.arch.max_len="
            f"{max_len}); re-run the labels stage or raise max_len")
    prior = load_file(str(prior_path))
    missing = [e.sid for e in examples if e.sid not in prior]
    if missing:
        raise ValueError(f"{prior_path}: no prior log-probs for {len(missing)} solutions "
                         f"(e.g. {missing[:3]}); re-run the prior stage")
    bsz, grad_accum = acfg.batch_size, acfg.grad_accum
    accelerator = make_accelerator(grad_accum, bsz, cfg.runtime.device)
    n_steps = steps_for(len(examples), bsz, acfg.epochs)
    precision = resolve_precision(cfg.runtime.mixed_precision, accelerator.device)
    plan = list(batch_plan(examples, spec.data_kind, spec.correct_only, bsz, n_steps, seed,
                           grad_accum=grad_accum, num_processes=accelerator.num_processes,
                           process_index=accelerator.process_index,
                           length_groups=acfg.length_groups))
    mismatched_prior = None
    if spec.needs_mismatched:
        # KTO's z0 needs the reference (the SFT model) on the pairs (x_i, y_{i+1}) that the
        # batches build; the plan fixes them, so they are scored here, once for every
        # candidate, and the loop reads them like the cached prior.
        mismatched_prior = response_logps(
            sft_model.to(accelerator.device), tok,
            mismatched_examples(plan, spec.data_kind),
            cfg.eval.batch_size, precision)
    hparams = loss_params(acfg)
    val = subsample(eval_problems(cfg, world_dir, "val"), acfg.val_problems, cfg.seed)
    return Cell(cfg=cfg, algorithm=algorithm, model_name=model_name, seed=seed,
                spec=spec, tok=tok, sft_model=sft_model, sft_dir=str(sft_dir),
                examples=len(examples), skipped=skipped, plan=plan, prior=prior,
                mismatched_prior=mismatched_prior, hparams=hparams, val=val,
                accelerator=accelerator, precision=precision, n_steps=n_steps,
                batch_size=bsz, grad_accum=grad_accum)


def loss_params(acfg: Align) -> LossParams:
    """The loss hyperparameters of params' ``align`` section."""
    return LossParams(beta=acfg.beta, reduction=acfg.reduction,
                      ipo_normalize=acfg.ipo_normalize, sft_coef=acfg.sft_coef,
                      desirable_weight=acfg.kto_weights.desirable,
                      undesirable_weight=acfg.kto_weights.undesirable)


def _responses(batch, logps, values) -> Responses:
    return Responses(policy_logps=logps, prior_logps=batch["prior_logps"],
                     mask=batch["response_mask"], token_labels=batch["token_labels"],
                     step_ids=batch["step_ids"], value_logits=values)


def alignment_step(spec, policy, batches: Iterator, prior: dict[str, torch.Tensor],
                   pad_id: int, hparams: LossParams, ref_model=None,
                   mismatched_prior: dict[str, torch.Tensor] | None = None
                   ) -> Callable[[int], tuple]:
    """The per-step function of an alignment run, driven by the algorithm's spec.

    One forward over every sequence of the batch (for paired data: the chosen then the
    rejected responses), cached prior log-probs, and, for KTO's family, the mismatched
    pairs (x_i, y_{i+1}) scored without a graph (z0 is detached) by the policy, with the
    reference's log-probs of those pairs read from ``mismatched_prior`` (computed before
    training over ``mismatched_examples`` of the plan) or, without it, computed in the loop
    by ``ref_model`` (which must already be on the policy's device).
    ``batches`` yields micro-batches (``batch_plan``): with gradient accumulation or
    several processes, KTO's mismatched pairs and z0 come from the micro-batch.
    """
    from pipa.batching import collate, device_of, mismatched, step_sequences, to_device
    from pipa.training import forward_logps

    if spec.needs_mismatched and ref_model is None and mismatched_prior is None:
        raise ValueError(f"{spec.name}: KTO's mismatched pairs need mismatched_prior "
                         "(cached reference log-probs) or a ref_model")

    def step_fn(step: int, model=None):
        # ``model``: what to call, the module ``fit`` prepared (DDP/DeepSpeed wrapper); the
        # batch goes to the device of ``policy``, which ``accelerator.prepare`` moved.
        net = policy if model is None else model
        units = next(batches)
        paired = spec.data_kind == "paired"
        seqs = step_sequences(units, spec.data_kind)
        device = device_of(policy)
        batch = to_device(collate(seqs, pad_id, prior), device)
        logps, values = forward_logps(net, batch)
        mismatched_responses = None
        if spec.needs_mismatched:
            kl = to_device(collate(mismatched(seqs), pad_id, mismatched_prior), device)
            with torch.no_grad():
                kl_logps, _ = forward_logps(net, kl)
                kl_prior = (kl["prior_logps"] if mismatched_prior is not None
                            else forward_logps(ref_model, kl)[0])
            mismatched_responses = Responses(policy_logps=kl_logps, prior_logps=kl_prior,
                                             mask=kl["response_mask"])
        if paired:  # the chosen responses first, then the rejected ones (step_sequences)
            n = len(units)
            sides = [_responses({k: v[part] for k, v in batch.items()}, logps[part],
                                None if values is None else values[part])
                     for part in (slice(0, n), slice(n, None))]
            loss_batch = PairedBatch(chosen=sides[0], rejected=sides[1])
        else:
            loss_batch = UnpairedBatch(responses=_responses(batch, logps, values),
                                       is_correct=batch["is_correct"],
                                       mismatched=mismatched_responses)
        loss, logs = spec.loss_fn(loss_batch, hparams)
        return loss, logs, [e.rid for e in seqs], int(batch["attention_mask"].sum())

    return step_fn


def train_candidate(cell: Cell, job: tuple[float, str], progress: bool = True) -> dict:
    """Train and validate one lr of the grid into its own folder (a forked worker or this
    process). Every candidate starts from the same weights, seed and batches."""
    from pipa.training import fit, full_weights_holder
    from pipa.value_head import PolicyWithValueHead, ValueHead

    lr, folder = job
    folder = Path(folder)
    acfg = cell.cfg.align
    accelerator = cell.accelerator
    torch.manual_seed(cell.seed)  # before the copy: LoRA's and the head's init draw from it
    model = copy.deepcopy(cell.sft_model)
    if acfg.lora.enabled:
        model = with_lora(model, acfg.lora)
    head = (ValueHead(cell.sft_model.config.hidden_size).to(accelerator.device)
            if cell.spec.needs_value_head else None)
    policy = PolicyWithValueHead(model, head)
    policy.train()
    holder, gather = full_weights_holder(accelerator, policy)
    step_fn = alignment_step(cell.spec, policy, iter(cell.plan), cell.prior,
                             cell.tok.pad_token_id, cell.hparams,
                             mismatched_prior=cell.mismatched_prior)
    live = forked_live(folder / "dvclive") if accelerator.is_main_process else None
    head_lr = acfg.value_head_lr  # None: the head trains at the policy's lr
    to_train = (list(policy.parameters()) if head is None or head_lr is None else
                [{"params": list(model.parameters())},
                 {"params": list(head.parameters()), "lr": head_lr}])
    last = fit(to_train, step_fn, cell.n_steps, lr=lr,
               warmup=int(acfg.warmup_ratio * cell.n_steps),
               min_lr_ratio=acfg.min_lr_ratio, grad_clip=acfg.grad_clip,
               live=live, desc=f"{cell.algorithm} {cell.model_name} s{cell.seed} lr={lr:g}",
               progress=progress, grad_accum=cell.grad_accum, accelerator=accelerator,
               model=policy, mixed_precision=cell.precision, on_trained=gather)
    if live is not None:
        live.end()
    model, head = holder.model, holder.value_head  # full weights, also under FSDP
    # Validate on a copy: merging LoRA in place would corrupt the adapter we save.
    eval_model = copy.deepcopy(model)
    if acfg.lora.enabled:
        eval_model = eval_model.merge_and_unload()
    rows = evaluate_model(cell.cfg, cell.model_name, cell.tok, eval_model, cell.val,
                          progress=False)
    acc = sum(r["correct"] for r in rows) / max(1, len(rows))
    verifier = None if head is None else value_head_as_verifier(cell, eval_model, head, rows)
    if accelerator.is_main_process:
        save_policy(model, head, cell.tok, folder / "model", lora=acfg.lora.enabled,
                    base_dir=cell.sft_dir)
    final = {k: v for k, v in last.items() if k != "tokens_per_s"}  # wall-clock
    print(f"  {cell.algorithm} {cell.model_name} s{cell.seed} lr={lr:g}: "
          f"validation accuracy {acc:.4f}", flush=True)
    out = {"lr": lr, "val_accuracy": acc, "final": final}
    return out if verifier is None else {**out, "verifier": verifier}


def value_head_as_verifier(cell: Cell, model, head, rows: list[dict]) -> dict:
    """AUC of g at the step ends of the candidate's own validation decodes against their
    final correctness (``pipa.verifier``): solutions the head never trained on."""
    from pipa.model_io import prompt_formatter
    from pipa.sampling import split_steps
    from pipa.value_head import PolicyWithValueHead
    from pipa.verifier import step_end_values, verifier_metrics

    question = {p["id"]: p["question"] for p in cell.val}
    solutions = [(question[r["id"]], split_steps(r["output"])) for r in rows]
    values = step_end_values(PolicyWithValueHead(model, head), cell.tok,
                             prompt_formatter(cell.cfg, cell.model_name, cell.tok), solutions,
                             batch_size=cell.cfg.eval.batch_size)
    return verifier_metrics(values, [r["correct"] for r in rows])


def save_policy(model, head, tok, model_dir: Path, *, lora: bool, base_dir: str) -> None:
    """A trained policy as a model folder: full weights and tokenizer, or a LoRA adapter
    naming its base; the value head beside it when there is one."""
    from pipa.value_head import save_value_head

    model.save_pretrained(model_dir)
    if lora:
        # peft writes target_modules from a set, in hash order: sort it so the same
        # seed gives the same bytes in every process.
        adapter_cfg = model_dir / "adapter_config.json"
        cfg = json.loads(adapter_cfg.read_text())
        if isinstance(cfg.get("target_modules"), list):
            cfg["target_modules"] = sorted(cfg["target_modules"])
        write_json(adapter_cfg, cfg)
        write_json(model_dir / "pipa_model.json", {"adapter": True, "base": base_dir})
    else:
        tok.save_pretrained(model_dir)
        write_json(model_dir / "pipa_model.json", {"adapter": False})
    if head is not None:
        save_value_head(head, model_dir)


def align_cell(cfg: Config, *, algorithm: str, model_name: str, seed: int,
               labels_path: str | Path, prior_path: str | Path, sft_dir: str | Path,
               world_dir: str | Path, out_dir: str | Path) -> dict:
    """Train one grid cell over the learning-rate grid; keep the lr best on validation.

    Output folder: the selected model (full weights, or a LoRA adapter naming its base),
    the value head when the algorithm has one, ``dvclive/`` of the selected run and
    ``train.json`` (validation accuracy of every lr tried, steps, timings).
    """
    from pipa.hardware import machine
    from pipa.parallel import fork_map, worker_plan
    from pipa.training import main_process_path

    cell = prepare_cell(cfg, algorithm=algorithm, model_name=model_name, seed=seed,
                        labels_path=labels_path, prior_path=prior_path, sft_dir=sft_dir,
                        world_dir=world_dir)
    accelerator = cell.accelerator
    threads, workers = cfg.runtime.threads, cfg.runtime.workers
    if accelerator.num_processes > 1 or accelerator.device.type != "cpu":
        workers = 1  # candidates share the device(s): one after another
    grid = cfg.align.lrs(algorithm)
    single_process = worker_plan(threads, workers, len(grid))[0] == 1
    train = functools.partial(train_candidate, cell, progress=single_process)
    started = time.perf_counter()
    with main_process_path(accelerator, out_dir) as tmp:  # other processes: a scratch path
        tmp.mkdir()
        jobs = [(lr, str(tmp / f"candidate_lr{lr:g}")) for lr in grid]
        tried = fork_map(train, jobs, threads=threads, workers=workers)
        # The first best on validation wins ties: the smaller lr of the grid's order.
        best = max(range(len(tried)), key=lambda i: (tried[i]["val_accuracy"], -i))
        lr, acc = tried[best]["lr"], tried[best]["val_accuracy"]
        if not accelerator.is_main_process:  # only the main process saves
            return {"selected_lr": lr, "val_accuracy": acc, "steps": cell.n_steps,
                    "seconds": round(time.perf_counter() - started, 1)}
        chosen = Path(jobs[best][1])
        shutil.move(str(chosen / "model"), str(tmp / "model"))
        shutil.move(str(chosen / "dvclive"), str(tmp / "dvclive"))
        for _, folder in jobs:
            shutil.rmtree(folder)
        summary = {"algorithm": algorithm, "model": model_name, "seed": seed,
                   "steps": cell.n_steps, "batch_size": cell.batch_size,
                   "examples": cell.examples, "skipped": cell.skipped, "selected_lr": lr,
                   "val_accuracy": acc, "lr_grid": tried, "precision": cell.precision,
                   "machine": machine()}
        if "verifier" in tried[best]:  # PIPA: g as a verifier on the validation decodes
            summary["verifier"] = tried[best]["verifier"]
        write_json(tmp / "train.json", summary)
    return {**summary, "seconds": round(time.perf_counter() - started, 1)}
