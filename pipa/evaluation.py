"""Evaluation: decode each benchmark problem with a model, grade it, write predictions and
metrics (a cell also decodes its validation problems with it, to pick the lr).

Which problems: the built-in world's tiers (``data.benchmarks``) or the real GSM8K / MATH /
MATH500 files (``data.benchmark_dir``); which grader follows ``data.source``.
"""

from __future__ import annotations

import time
from pathlib import Path

from pipa import config as C
from pipa.config_types import Config
from pipa.io import write_json, write_jsonl
from pipa.model_io import load_policy_model, prompt_formatter


def evaluate_model(cfg: Config, model_name: str, tok, model, problems: list[dict],
                   progress: bool = True) -> list[dict]:
    """Generate for each problem and grade it; returns prediction rows (see ARCHITECTURE).

    ``eval.decoding``: ``greedy`` (batched greedy decoding) or ``beam`` (the paper's
    step-level beam search with widths ``eval.beam[benchmark] = [B1, B2]``, greedy steps,
    candidates scored by the policy's log-probability).
    """
    from pipa.generation import generate, step_beam_search
    from pipa.grading import grade_predictions

    ecfg = cfg.eval
    fmt = prompt_formatter(cfg, model_name, tok)
    setting = grading_setting(cfg)
    decoding, stops = ecfg.decoding, ecfg.stop_strings
    model.eval()
    outputs: dict[int, str] = {}
    by_bench: dict[str, list[int]] = {}
    for i, p in enumerate(problems):
        by_bench.setdefault(p["benchmark"], []).append(i)
    from pipa.parallel import fork_map, worker_plan

    threads, workers = cfg.runtime.threads, cfg.runtime.workers
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
            return generate(model, tok, prompts, max_new_tokens=ecfg.max_new_tokens,
                            batch_size=ecfg.batch_size, temperature=0.0,
                            stop_strings=stops, progress=show)
        if bench not in ecfg.beam:
            raise C.ConfigError(f"params.yaml: missing key 'eval.beam.{bench}' (beam widths "
                                f"[B1, B2] of benchmark {bench!r}); add it")
        width, samples = ecfg.beam[bench]
        return step_beam_search(model, tok, prompts, beam_width=width, n_samples=samples,
                                max_steps=ecfg.max_steps, max_step_tokens=ecfg.max_new_tokens,
                                stop_strings=stops, batch_size=ecfg.batch_size)

    for (_, idx), texts in zip(jobs, fork_map(decode, jobs, threads=threads, workers=workers)):
        outputs.update(zip(idx, texts))
    rows = grade_predictions(problems, [outputs[i] for i in range(len(problems))],
                             setting=setting, fallback=ecfg.answer_fallback)
    rows.sort(key=lambda r: (r["benchmark"], r["id"]))
    return rows


def grading_setting(cfg: Config) -> str:
    """'world' for the built-in world, 'real' for GSM8K/MATH (picks the grader)."""
    return "world" if cfg.data.source == "builtin" else "real"


def eval_problems(cfg: Config, world_dir: str | Path, split: str) -> list[dict]:
    """The benchmark problems of the configured world, in the common schema.

    Built-in world: the tiers named in ``data.benchmarks`` of ``split``. Real setting: the
    test split of each benchmark from ``data.benchmark_dir``; validation (lr selection)
    then uses ``data.val_benchmark`` problems drawn from GSM8K train, never a test set.
    """
    from pipa import benchmarks
    from pipa.world import load_split

    names = list(cfg.data.benchmarks)
    if grading_setting(cfg) == "world":
        rows = benchmarks.load_world_tier(load_split(world_dir, split))
        return [r for r in rows if r["benchmark"] in names]
    data_dir = cfg.data.benchmark_dir
    if split == "test":
        return [row for name in names for row in benchmarks.load_benchmark(name, data_dir)]
    val = benchmarks.load_gsm8k(Path(data_dir) / "gsm8k" / "train.jsonl")
    return [dict(r, benchmark="gsm8k") for r in val]


def evaluate_folder(cfg: Config, model_name: str, model_dir: str | Path,
                    world_dir: str | Path, out_dir: str | Path) -> dict:
    from pipa.grading import evaluate_predictions
    from pipa.hardware import setup_runtime

    setup_runtime(cfg.runtime.threads, cfg.seed)
    tok, model = load_policy_model(cfg, model_name, model_dir, on_device=True)
    problems = eval_problems(cfg, world_dir, "test")
    started = time.perf_counter()
    rows = evaluate_model(cfg, model_name, tok, model, problems)
    metrics = evaluate_predictions(rows)
    seconds = round(time.perf_counter() - started, 1)
    out_dir = Path(out_dir)
    write_jsonl(out_dir / "predictions.jsonl", rows)
    write_json(out_dir / "metrics.json", metrics)
    return {"seconds": seconds, **{k: v["accuracy"] for k, v in metrics["benchmarks"].items()}}

