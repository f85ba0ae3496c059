"""What each DVC stage does, as functions of (params, paths). Stage scripts only parse args.

Every function writes its declared outputs whole (``pipa.io.atomic_path``): a stage killed
half-way leaves nothing that DVC would cache.
"""

from __future__ import annotations

import json
import random
import time
from pathlib import Path

import torch

from pipa import config as C
from pipa.io import atomic_path, read_jsonl, write_json, write_jsonl
from pipa.live import forked_live

# ---------------------------------------------------------------- world


def load_split(world_dir: str | Path, split: str) -> list[dict]:
    return read_jsonl(Path(world_dir) / f"{split}.jsonl")


def prompt_formatter(params: dict, model_name: str, tokenizer=None):
    """How a question becomes the prompt text: the world's format or the model's chat template."""
    fam = C.get(params, f"model_families.{model_name}")
    if fam.get("prompt_format", "world") == "chat":
        def chat(question: str) -> str:
            messages = [{"role": "user", "content": question}]
            return tokenizer.apply_chat_template(messages, add_generation_prompt=True,
                                                 tokenize=False)
        return chat
    from pipa.world import format_prompt
    return format_prompt


# ---------------------------------------------------------------- data helpers


def solutions_records(solutions, correct_only: bool = False) -> list[dict]:
    """AlphaMath solutions as labelled-record dicts (answer-level labels), for SFT/priors."""
    rows = []
    for s in solutions:
        if correct_only and not s.correct:
            continue
        rows.append({"rid": s.sid, "sid": s.sid, "qid": s.qid, "question": s.question,
                     "steps": s.steps, "correct": s.correct,
                     "step_labels": [int(s.correct)] * len(s.steps), "pair": None})
    return rows


def load_policy_model(params: dict, model_name: str, folder: str | Path,
                      on_device: bool = False):
    """Tokenizer and model from a stage output folder (full weights or LoRA adapter).

    ``on_device``: moved to ``runtime.device`` (the one-process stages that only run the
    model: sampling, prior log-probs, evaluation). Training stages leave it where it is
    loaded; ``accelerate`` places it on each process's device.
    """
    from pipa.models import load_model
    from pipa.training import resolve_device

    folder = Path(folder)
    meta_path = folder / "pipa_model.json"
    meta = json.loads(meta_path.read_text()) if meta_path.exists() else {}
    dtype = C.get(params, "runtime.dtype")
    if meta.get("adapter"):
        from peft import PeftModel

        base = load_model(meta["base"], dtype)
        model = PeftModel.from_pretrained(base, str(folder)).merge_and_unload()
        tok = tokenizer_of(meta["base"])
    else:
        model = load_model(folder, dtype)
        tok = tokenizer_of(folder)
    if on_device:
        model.to(resolve_device(C.get(params, "runtime.device")))
    return tok, model


def tokenizer_of(folder: str | Path):
    """The tokenizer saved in a model folder, exactly as it was trained.

    AutoTokenizer picks the class from the model's ``model_type``: for a Qwen2 config it
    rebuilds our world tokenizer with Qwen2's byte-level pre-tokenizer, silently dropping
    every space and newline. A tokenizer we trained ourselves (saved as the generic
    ``TokenizersBackend``/``PreTrainedTokenizerFast``) is loaded through that generic class;
    hub tokenizers keep going through AutoTokenizer.
    """
    from pipa.models import load_tokenizer

    config = Path(folder) / "tokenizer_config.json"
    saved_class = json.loads(config.read_text()).get("tokenizer_class") if config.exists() else None
    if saved_class in ("TokenizersBackend", "PreTrainedTokenizerFast"):
        from transformers import PreTrainedTokenizerFast

        return PreTrainedTokenizerFast.from_pretrained(str(folder), local_files_only=True)
    return load_tokenizer(folder)


# ---------------------------------------------------------------- SFT and priors


def finetune(params: dict, model_name: str, init_dir: str | Path, records: list[dict],
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

    from pipa.examples import build_examples
    from pipa.losses import ALGORITHMS
    from pipa.training import (
        batch_plan,
        collate,
        device_of,
        fit,
        forward_logps,
        full_weights_holder,
        machine,
        main_process_path,
        make_accelerator,
        resolve_precision,
        setup_runtime,
        steps_for,
        to_device,
    )
    from pipa.value_head import PolicyWithValueHead

    cfg = C.get(params, section)
    seed = int(C.get(params, "seed"))
    setup_runtime(int(C.get(params, "runtime.threads")), seed)
    tok, model = load_policy_model(params, model_name, init_dir)
    fmt = prompt_formatter(params, model_name, tok)
    max_len = int(C.get(params, f"model_families.{model_name}.arch.max_len"))
    examples, skipped = build_examples(records, tok, fmt, max_len)
    if not examples:
        raise ValueError(
            f"{section} {model_name}: no training solutions (of {len(records)} records, "
            f"{skipped} skipped); the sampling model solved nothing - train the base model "
            "longer (pretrain.steps) or set sampling.include_gold: true"
        )
    bsz = int(cfg["batch_size"])
    grad_accum = int(C.get(params, f"{section}.grad_accum"))
    accelerator = make_accelerator(grad_accum, bsz, C.get(params, "runtime.device"))
    precision = resolve_precision(C.get(params, "runtime.mixed_precision"), accelerator.device)
    n_steps = steps_for(len(examples), bsz, float(cfg["epochs"]))
    batches = batch_plan(examples, "unpaired", False, bsz, n_steps, seed, grad_accum=grad_accum,
                         num_processes=accelerator.num_processes,
                         process_index=accelerator.process_index)
    lora = C.get(params, f"{section}.lora")
    if lora["enabled"]:
        model = with_lora(model, lora)
    policy = PolicyWithValueHead(model, None)
    holder, gather = full_weights_holder(accelerator, policy)
    sft = ALGORITHMS["sft"]
    started = time.perf_counter()

    def step_fn(step: int, net=None):
        exs = next(batches)
        batch = to_device(collate(exs, tok.pad_token_id), device_of(policy))
        logps, _ = forward_logps(policy if net is None else net, batch)
        loss, _ = sft.loss_fn(policy_logps=logps, mask=batch["response_mask"],
                                 is_correct=torch.ones_like(batch["is_correct"]),
                                 reduction="mean", prior_logps=batch["prior_logps"],
                                 token_labels=batch["token_labels"])
        return loss, {}, [e.rid for e in exs], int(batch["attention_mask"].sum())

    model.train()
    with main_process_path(accelerator, out_dir) as tmp:
        live = Live(str(live_dir), save_dvc_exp=False, dvcyaml=None, report=None) \
            if live_dir and accelerator.is_main_process else None
        last = fit(policy.parameters(), step_fn, n_steps, lr=float(cfg["lr"]),
                   warmup=int(cfg.get("warmup", 0)), min_lr_ratio=float(cfg["min_lr_ratio"]),
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
            if lora["enabled"]:
                trained = trained.merge_and_unload()
            trained.save_pretrained(tmp)
            tok.save_pretrained(tmp)
            write_json(tmp / "pipa_train.json", summary)
    return {**summary, "seconds": round(time.perf_counter() - started, 1)}


def with_lora(model, lora: dict):
    """``model`` wrapped by peft with LoRA adapters from a params ``lora`` mapping."""
    from peft import LoraConfig, get_peft_model

    return get_peft_model(model, LoraConfig(
        r=int(lora["r"]), lora_alpha=int(lora["alpha"]), lora_dropout=float(lora["dropout"]),
        target_modules=list(lora["target_modules"])))


@torch.no_grad()
def response_logps(model, tok, examples, batch_size: int,
                   mixed_precision: str = "fp32") -> dict[str, torch.Tensor]:
    """log p(y_t | x, y_<t) of every response token, keyed by solution id, computed in the
    precision the alignment's policy forward uses (``autocast(mixed_precision)``), so the
    policy/prior log-ratio starts at zero up to rounding."""
    from tqdm import tqdm

    from pipa.training import autocast, collate, device_of, forward_logps, to_device
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


def compute_prior(params: dict, model_name: str, prior_model_dir: str | Path,
                  alphamath_path: str | Path, out_file: str | Path) -> dict:
    """Cache the prior's per-token log-probs of every solution once, for every cell."""
    from safetensors.torch import save_file

    from pipa import alphamath
    from pipa.examples import build_examples
    from pipa.training import device_of, machine, resolve_precision, setup_runtime

    setup_runtime(int(C.get(params, "runtime.threads")), int(C.get(params, "seed")))
    tok, model = load_policy_model(params, model_name, prior_model_dir, on_device=True)
    fmt = prompt_formatter(params, model_name, tok)
    max_len = int(C.get(params, f"model_families.{model_name}.arch.max_len"))
    records = solutions_records(alphamath.read(alphamath_path))
    examples, skipped = build_examples(records, tok, fmt, max_len)
    started = time.perf_counter()
    precision = resolve_precision(C.get(params, "runtime.mixed_precision"), device_of(model))
    logps = response_logps(model, tok, examples, int(C.get(params, "eval.batch_size")),
                           precision)
    # What computed them travels with them, as one metadata entry: safetensors writes its
    # metadata map in hash order, so several keys would not give the same bytes twice.
    made_by = json.dumps({"precision": precision, **machine()}, sort_keys=True)
    with atomic_path(out_file) as tmp:
        save_file(logps, str(tmp), metadata={"pipa": made_by})
    return {"solutions": len(logps), "skipped": skipped, "precision": precision,
            "seconds": round(time.perf_counter() - started, 1)}


# ---------------------------------------------------------------- evaluation


def evaluate_model(params: dict, model_name: str, tok, model, problems: list[dict],
                   progress: bool = True) -> list[dict]:
    """Generate for each problem and grade it; returns prediction rows (see ARCHITECTURE).

    ``eval.decoding``: ``greedy`` (batched greedy decoding) or ``beam`` (the paper's
    step-level beam search with widths ``eval.beam[benchmark] = [B1, B2]``, greedy steps,
    candidates scored by the policy's log-probability).
    """
    from pipa.generation import generate, step_beam_search
    from pipa.grading import grade_predictions

    ecfg = C.get(params, "eval")
    fmt = prompt_formatter(params, model_name, tok)
    setting = grading_setting(params)
    decoding = ecfg.get("decoding", "greedy")
    if decoding not in ("greedy", "beam"):
        raise C.ConfigError(f"params.yaml: eval.decoding={decoding!r}; valid: greedy, beam")
    stops = tuple(ecfg.get("stop_strings", []))
    model.eval()
    outputs: dict[int, str] = {}
    by_bench: dict[str, list[int]] = {}
    for i, p in enumerate(problems):
        by_bench.setdefault(p["benchmark"], []).append(i)
    from pipa.parallel import fork_map, worker_plan

    threads = int(C.get(params, "runtime.threads"))
    workers = int(C.get(params, "runtime.workers"))
    processes = worker_plan(threads, workers, len(problems))[0]
    # Strided shards of each benchmark, one job each: decoding a problem does not depend on
    # which others share its batch (left padding, per-row stopping), so shards give the
    # same texts as one pass; forked workers decode them side by side.
    jobs = [(bench, idx[k::processes]) for bench, idx in by_bench.items()
            for k in range(processes) if idx[k::processes]]
    show = progress and processes == 1

    def decode(job: tuple[str, list[int]]) -> list[str]:
        bench, idx = job
        prompts = [fmt(problems[i]["question"]) for i in idx]
        if decoding == "greedy":
            return generate(model, tok, prompts, max_new_tokens=int(ecfg["max_new_tokens"]),
                            batch_size=int(ecfg["batch_size"]), temperature=0.0,
                            stop_strings=stops, progress=show)
        width, samples = (int(x) for x in C.get(params, f"eval.beam.{bench}"))
        return step_beam_search(model, tok, prompts, beam_width=width, n_samples=samples,
                                max_steps=int(ecfg.get("max_steps", 16)),
                                max_step_tokens=int(ecfg["max_new_tokens"]),
                                stop_strings=stops, batch_size=int(ecfg["batch_size"]))

    for (_, idx), texts in zip(jobs, fork_map(decode, jobs, threads=threads, workers=workers)):
        outputs.update(zip(idx, texts))
    rows = grade_predictions(problems, [outputs[i] for i in range(len(problems))],
                             setting=setting)
    rows.sort(key=lambda r: (r["benchmark"], r["id"]))
    return rows


def grading_setting(params: dict) -> str:
    """'world' for the built-in world, 'real' for GSM8K/MATH (picks the grader)."""
    return "world" if C.get(params, "data.source") == "builtin" else "real"


def eval_problems(params: dict, world_dir: str | Path, split: str) -> list[dict]:
    """The benchmark problems of the configured world, in the common schema.

    Built-in world: the tiers named in ``data.benchmarks`` of ``split``. Real setting: the
    test split of each benchmark from ``data.benchmark_dir``; validation (lr selection)
    then uses ``data.val_benchmark`` problems drawn from GSM8K train, never a test set.
    """
    from pipa import benchmarks

    names = list(C.get(params, "data.benchmarks"))
    if grading_setting(params) == "world":
        rows = benchmarks.load_world_tier(load_split(world_dir, split))
        return [r for r in rows if r["benchmark"] in names]
    data_dir = C.get(params, "data.benchmark_dir")
    if split == "test":
        return [row for name in names for row in benchmarks.load_benchmark(name, data_dir)]
    val = benchmarks.load_gsm8k(Path(data_dir) / "gsm8k" / "train.jsonl")
    return [dict(r, benchmark="gsm8k") for r in val]


def evaluate_folder(params: dict, model_name: str, model_dir: str | Path,
                    world_dir: str | Path, out_dir: str | Path) -> dict:
    from pipa.grading import evaluate_predictions
    from pipa.training import setup_runtime

    setup_runtime(int(C.get(params, "runtime.threads")), int(C.get(params, "seed")))
    tok, model = load_policy_model(params, model_name, model_dir, on_device=True)
    problems = eval_problems(params, world_dir, "test")
    started = time.perf_counter()
    rows = evaluate_model(params, model_name, tok, model, problems)
    metrics = evaluate_predictions(rows)
    seconds = round(time.perf_counter() - started, 1)
    out_dir = Path(out_dir)
    write_jsonl(out_dir / "predictions.jsonl", rows)
    write_json(out_dir / "metrics.json", metrics)
    return {"seconds": seconds, **{k: v["accuracy"] for k, v in metrics["benchmarks"].items()}}


def validation_accuracy(params: dict, model_name: str, tok, model, val: list[dict]) -> float:
    rows = evaluate_model(params, model_name, tok, model, val, progress=False)
    return sum(r["correct"] for r in rows) / max(1, len(rows))


def subsample(rows: list, n: int | None, seed: int) -> list:
    if n is None or n >= len(rows):
        return rows
    rng = random.Random(seed)
    return sorted(rng.sample(rows, n), key=lambda r: r["id"])


# ---------------------------------------------------------------- alignment


def align_cell(params: dict, *, algorithm: str, model_name: str, seed: int,
               labels_path: str | Path, prior_path: str | Path, sft_dir: str | Path,
               world_dir: str | Path, out_dir: str | Path) -> dict:
    """Train one grid cell over the learning-rate grid; keep the lr best on validation.

    Output folder: the selected model (full weights, or a LoRA adapter naming its base),
    the value head when the algorithm has one, ``dvclive/`` of the selected run and
    ``train.json`` (validation accuracy of every lr tried, steps, timings).
    """
    import copy
    import shutil

    from safetensors.torch import load_file

    from pipa.examples import build_examples
    from pipa.losses import ALGORITHMS
    from pipa.training import (
        alignment_step,
        batch_plan,
        fit,
        full_weights_holder,
        machine,
        main_process_path,
        make_accelerator,
        mismatched_examples,
        resolve_precision,
        setup_runtime,
        steps_for,
    )
    from pipa.value_head import PolicyWithValueHead, ValueHead, save_value_head

    if algorithm not in ALGORITHMS:
        raise C.ConfigError(f"unknown algorithm {algorithm!r}; valid: {sorted(ALGORITHMS)}")
    spec = ALGORITHMS[algorithm]
    acfg = C.get(params, "align")
    setup_runtime(int(C.get(params, "runtime.threads")), seed)
    tok, sft_model = load_policy_model(params, model_name, sft_dir)
    fmt = prompt_formatter(params, model_name, tok)
    max_len = int(C.get(params, f"model_families.{model_name}.arch.max_len"))
    records = read_jsonl(labels_path)
    examples, skipped = build_examples(records, tok, fmt, max_len)
    prior = load_file(str(prior_path))
    missing = [e.sid for e in examples if e.sid not in prior]
    if missing:
        raise ValueError(f"{prior_path}: no prior log-probs for {len(missing)} solutions "
                         f"(e.g. {missing[:3]}); re-run the prior stage")
    bsz = int(acfg["batch_size"])
    grad_accum = int(acfg["grad_accum"])
    accelerator = make_accelerator(grad_accum, bsz, C.get(params, "runtime.device"))
    n_steps = steps_for(len(examples), bsz, float(acfg["epochs"]))
    precision = resolve_precision(C.get(params, "runtime.mixed_precision"), accelerator.device)
    # Every lr candidate sees the same batches (same seed): plan them once.
    plan = list(batch_plan(examples, spec.data_kind, spec.correct_only, bsz, n_steps, seed,
                           grad_accum=grad_accum, num_processes=accelerator.num_processes,
                           process_index=accelerator.process_index,
                           length_groups=int(acfg["length_groups"])))
    mismatched_prior = None
    if spec.needs_mismatched:
        # KTO's z0 needs the reference (the SFT model) on the pairs (x_i, y_{i+1}) that the
        # batches build; the plan fixes them, so they are scored here, once for every
        # candidate, and the loop reads them like the cached prior.
        mismatched_prior = response_logps(
            sft_model.to(accelerator.device), tok,
            mismatched_examples(plan, spec.data_kind),
            int(C.get(params, "eval.batch_size")), precision)
    hparams = {"beta": float(acfg["beta"]), "reduction": acfg["reduction"],
               "ipo_normalize": bool(acfg["ipo_normalize"]), "sft_coef": float(acfg["sft_coef"])}
    val = subsample(eval_problems(params, world_dir, "val"), acfg.get("val_problems"),
                    int(C.get(params, "seed")))
    lora = acfg["lora"]
    pad = tok.pad_token_id
    hidden = sft_model.config.hidden_size

    threads = int(C.get(params, "runtime.threads"))
    workers = int(C.get(params, "runtime.workers"))
    if accelerator.num_processes > 1 or accelerator.device.type != "cpu":
        workers = 1  # candidates share the device(s): one after another

    def train_candidate(job: tuple[float, str]) -> dict:
        """Train and validate one lr of the grid into its own folder (a forked worker or
        this process). Every candidate starts from the same weights, seed and batches."""
        lr, folder = job
        folder = Path(folder)
        torch.manual_seed(seed)
        model = copy.deepcopy(sft_model)
        if lora["enabled"]:
            from peft import LoraConfig, get_peft_model

            model = get_peft_model(model, LoraConfig(
                r=int(lora["r"]), lora_alpha=int(lora["alpha"]),
                lora_dropout=float(lora["dropout"]),
                target_modules=list(lora["target_modules"])))
        head = ValueHead(hidden).to(accelerator.device) if spec.needs_value_head else None
        policy = PolicyWithValueHead(model, head)
        policy.train()
        holder, gather = full_weights_holder(accelerator, policy)
        step_fn = alignment_step(spec, policy, iter(plan), prior, pad, hparams,
                                 mismatched_prior=mismatched_prior)
        live = forked_live(folder / "dvclive") if accelerator.is_main_process else None
        last = fit(list(policy.parameters()), step_fn, n_steps, lr=lr,
                   warmup=int(float(acfg["warmup_ratio"]) * n_steps),
                   min_lr_ratio=float(acfg["min_lr_ratio"]), grad_clip=float(acfg["grad_clip"]),
                   live=live, desc=f"{algorithm} {model_name} s{seed} lr={lr:g}",
                   progress=single_process, grad_accum=grad_accum, accelerator=accelerator,
                   model=policy, mixed_precision=precision, on_trained=gather)
        if live is not None:
            live.end()
        model, head = holder.model, holder.value_head  # full weights, also under FSDP
        # Validate on a copy: merging LoRA in place would corrupt the adapter we save.
        eval_model = copy.deepcopy(model)
        if lora["enabled"]:
            eval_model = eval_model.merge_and_unload()
        acc = validation_accuracy(params, model_name, tok, eval_model, val)
        if accelerator.is_main_process:
            save_policy(model, head, folder / "model")
        final = {k: v for k, v in last.items() if k != "tokens_per_s"}  # wall-clock
        print(f"  {algorithm} {model_name} s{seed} lr={lr:g}: validation accuracy {acc:.4f}",
              flush=True)
        return {"lr": lr, "val_accuracy": acc, "final": final}

    def save_policy(model, head, model_dir: Path) -> None:
        model.save_pretrained(model_dir)
        if lora["enabled"]:
            # peft writes target_modules from a set, in hash order: sort it so the same
            # seed gives the same bytes in every process.
            adapter_cfg = model_dir / "adapter_config.json"
            cfg = json.loads(adapter_cfg.read_text())
            if isinstance(cfg.get("target_modules"), list):
                cfg["target_modules"] = sorted(cfg["target_modules"])
            write_json(adapter_cfg, cfg)
            write_json(model_dir / "pipa_model.json", {"adapter": True, "base": str(sft_dir)})
        else:
            tok.save_pretrained(model_dir)
            write_json(model_dir / "pipa_model.json", {"adapter": False})
        if head is not None:
            save_value_head(head, model_dir)

    from pipa.parallel import fork_map, worker_plan

    grid = C.lr_grid(params, algorithm)
    single_process = worker_plan(threads, workers, len(grid))[0] == 1
    started = time.perf_counter()
    with main_process_path(accelerator, out_dir) as tmp:  # other processes: a scratch path
        tmp.mkdir()
        jobs = [(lr, str(tmp / f"candidate_lr{lr:g}")) for lr in grid]
        tried = fork_map(train_candidate, jobs, threads=threads, workers=workers)
        # The first best on validation wins ties: the smaller lr of the grid's order.
        best = max(range(len(tried)), key=lambda i: (tried[i]["val_accuracy"], -i))
        lr, acc = tried[best]["lr"], tried[best]["val_accuracy"]
        if not accelerator.is_main_process:  # only the main process saves
            return {"selected_lr": lr, "val_accuracy": acc, "steps": n_steps,
                    "seconds": round(time.perf_counter() - started, 1)}
        chosen = Path(jobs[best][1])
        shutil.move(str(chosen / "model"), str(tmp / "model"))
        shutil.move(str(chosen / "dvclive"), str(tmp / "dvclive"))
        for _, folder in jobs:
            shutil.rmtree(folder)
        summary = {"algorithm": algorithm, "model": model_name, "seed": seed,
                   "steps": n_steps, "batch_size": bsz, "examples": len(examples),
                   "skipped": skipped, "selected_lr": lr, "val_accuracy": acc,
                   "lr_grid": tried, "precision": precision, "machine": machine()}
        write_json(tmp / "train.json", summary)
    return {**summary, "seconds": round(time.perf_counter() - started, 1)}
