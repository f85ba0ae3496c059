"""Alignment data made the way AlphaMath made its data, from a model of the DS family.

For each training problem the model samples several solutions; the world's exact checker
judges each; every step's Q is estimated from continuations that the same model samples
from that step's prefix: Q = 2 × (fraction reaching the right answer) − 1, and the last
step's Q is exactly ±1. Negatives therefore carry the model's own mistakes, not a
programmatic solver's.
"""

from __future__ import annotations

import time

from tqdm import tqdm

from pipa.config_types import Config


def split_steps(text: str) -> list[str]:
    """Lines of a response, each keeping its ``\\n`` (a trailing partial line is a step too)."""
    steps = text.splitlines(keepends=True)
    return [s for s in steps if s.strip()]


def sample_solutions(model, tok, problems: list[dict], *, format_prompt, n_samples: int,
                     n_rollouts: int, temperature: float, max_new_tokens: int,
                     batch_size: int, seed: int, check, include_gold: bool = False,
                     progress: bool = True):
    """Return rows ``(question, steps, q_values)`` for the AlphaMath writer, and stats.

    ``include_gold`` adds each problem's reference solution as one more solution (its step
    Q values still estimated by rollouts). Off by default; the micro test config uses it
    because an untrained model solves nothing and SFT needs positives.
    """
    from pipa.generation import generate

    started = time.perf_counter()
    prompts = [format_prompt(p["question"]) for p in problems for _ in range(n_samples)]
    outputs = generate(model, tok, prompts, max_new_tokens=max_new_tokens,
                       batch_size=batch_size, temperature=temperature, seed=seed,
                       progress=progress)
    solutions = []  # (problem, steps, correct)
    dropped_no_answer = 0
    for i, out in enumerate(outputs):
        problem = problems[i // n_samples]
        steps = split_steps(out)
        if not steps:
            dropped_no_answer += 1
            continue
        solutions.append((problem, steps, bool(check(problem["answer"], out))))
    if include_gold:
        solutions.extend((p, list(p["steps"]), True) for p in problems)

    # Q of every non-final step from rollouts; identical prefixes (common: the first steps of
    # several samples agree) are rolled out once.
    prefix_keys = {}
    for problem, steps, _ in solutions:
        for k in range(1, len(steps)):
            prefix_keys.setdefault((problem["id"], "".join(steps[:k])), problem)
    keys = sorted(prefix_keys)
    roll_prompts = [format_prompt(prefix_keys[key]["question"]) + key[1]
                    for key in keys for _ in range(n_rollouts)]
    roll_out = generate(model, tok, roll_prompts, max_new_tokens=max_new_tokens,
                        batch_size=batch_size, temperature=temperature, seed=seed + 1,
                        progress=progress) if roll_prompts else []
    q_of = {}
    for j, key in enumerate(tqdm(keys, desc="Q values", disable=not progress, mininterval=2)):
        problem = prefix_keys[key]
        wins = sum(check(problem["answer"], key[1] + roll_out[j * n_rollouts + r])
                   for r in range(n_rollouts))
        q_of[key] = 2.0 * wins / n_rollouts - 1.0

    rows = []
    for problem, steps, correct in solutions:
        qs = [q_of[(problem["id"], "".join(steps[:k]))] for k in range(1, len(steps))]
        qs.append(1.0 if correct else -1.0)
        rows.append((problem["question"], steps, qs))
    n_correct = sum(c for _, _, c in solutions)
    stats = {"problems": len(problems), "samples": len(outputs),
             "solutions": len(solutions), "correct": n_correct,
             "incorrect": len(solutions) - n_correct, "dropped_empty": dropped_no_answer,
             "gold_added": len(problems) if include_gold else 0,
             "rollout_prefixes": len(keys), "rollouts": len(roll_prompts),
             "sample_accuracy": n_correct / max(1, len(solutions)),
             "seconds": round(time.perf_counter() - started, 1)}
    return rows, stats


def sample_alphamath(cfg: Config, base_dir: str, world_dir: str, out_path: str,
                     stats_path: str) -> dict:
    """The ``sample`` stage: ``sampling.n_problems`` training problems of the world, solved
    ``sampling.samples_per_problem`` times by the ``sampling.model`` base model, every step
    valued by rollouts, written in AlphaMath's format (``out_path``) with stats."""
    from pipa import alphamath, world
    from pipa.hardware import setup_runtime
    from pipa.io import write_json
    from pipa.model_io import load_policy_model, prompt_formatter
    from pipa.world import load_split, subsample

    scfg, seed = cfg.sampling, cfg.seed
    setup_runtime(cfg.runtime.threads, seed)
    tok, model = load_policy_model(cfg, scfg.model, base_dir, on_device=True)
    problems = subsample(load_split(world_dir, "train"), scfg.n_problems, seed)
    rows, stats = sample_solutions(
        model, tok, problems, format_prompt=prompt_formatter(cfg, scfg.model, tok),
        n_samples=scfg.samples_per_problem, n_rollouts=scfg.rollouts,
        temperature=scfg.temperature, max_new_tokens=scfg.max_new_tokens,
        batch_size=scfg.batch_size, seed=seed, check=world.check,
        include_gold=scfg.include_gold)
    alphamath.write(out_path, rows)
    # Wall time stays out of the cached stats (same seed, same bytes); it is printed.
    write_json(stats_path, {k: v for k, v in stats.items() if k != "seconds"})
    return stats
