"""One model with a value head, every decoding mode of ``pipa.search``, graded on the same
problems: Table 5's cell (issue #20).

For each budget N: best-of-N (by g: the minimum and the last step end) on N samples; the step beam with B1 = ``beam_width`` and B2 = N / B1 scored by g (the value
beam), by the policy's cumulative log-probability of the drawn tokens (the paper's beam,
sampled here so that it spends the same tokens), and, as references that say whether the search itself works, by the
world's exact oracle and by chance. Majority vote at every m = 1 .. max(N) (the samples are
nested, so each m is free): the baseline each mode is compared with at the tokens it spent.
Greedy decoding is the budget-1 row. Every mode reports its accuracy per benchmark and the
tokens it sampled for each problem; equal-compute comparisons read the tokens, not N.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from pipa import search
from pipa.config_types import Search
from pipa.grading import grade_predictions
from pipa.sampling import split_steps
from pipa.verifier import verifier_metrics


def reliability(values: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> list[dict]:
    """g's reliability diagram: the step-end values in ``n_bins`` equal-width bins of [0, 1],
    each with its mean g, the share of those step ends whose solution is correct, and the
    count (empty bins left out). A calibrated g lies on the diagonal."""
    if len(values) != len(correct):
        raise ValueError(f"reliability: {len(values)} values but {len(correct)} labels")
    bins: list[list[tuple[float, bool]]] = [[] for _ in range(n_bins)]
    for g, c in zip(values, correct):
        bins[min(int(g * n_bins), n_bins - 1)].append((g, bool(c)))
    return [{"low": k / n_bins, "high": (k + 1) / n_bins,
             "mean_g": sum(g for g, _ in b) / len(b),
             "correct": sum(c for _, c in b) / len(b), "count": len(b)}
            for k, b in enumerate(bins) if b]


def _correct(problems: list[dict], texts: list[str], setting: str, fallback: str) -> list[int]:
    """1/0 per problem, in ``problems``' order: is ``texts[i]`` right?"""
    rows = grade_predictions(problems, texts, setting=setting, fallback=fallback)
    by_id = {(r["benchmark"], r["id"]): int(bool(r["correct"])) for r in rows}
    return [by_id[(p["benchmark"], p["id"])] for p in problems]


def _accuracy(problems: list[dict], correct: list[int]) -> dict:
    by: dict[str, list[int]] = {}
    for p, c in zip(problems, correct):
        by.setdefault(p["benchmark"], []).append(c)
    return {bench: 100.0 * sum(c) / len(c) for bench, c in sorted(by.items())}


def _graded_samples(problems: list[dict], samples: list[list[tuple[str, int]]],
                    setting: str, fallback: str) -> list[list[dict]]:
    """Each sample's prediction row (``grade_predictions``), in the samples' own order."""
    copies = [dict(p, id=f"{p['id']}#{k}") for p, s in zip(problems, samples)
              for k in range(len(s))]
    rows = grade_predictions(copies, [text for s in samples for text, _ in s],
                             setting=setting, fallback=fallback)
    by_id = {(r["benchmark"], r["id"]): r for r in rows}
    return [[by_id[(p["benchmark"], f"{p['id']}#{k}")] for k in range(len(s))]
            for p, s in zip(problems, samples)]


def search_modes(model, head, tokenizer, problems: list[dict], *,
                 format_prompt: Callable[[str], str], is_final: Callable[[str], bool],
                 setting: str, fallback: str, budgets: Sequence[int], beam_width: int,
                 temperature: float, max_step_tokens: int, max_new_tokens: int,
                 max_steps: int, seed: int, batch_size: int = 64,
                 references: bool = True) -> dict:
    """Every mode on ``problems`` (the common schema; the oracle needs the world's).
    ``model`` is the policy, ``head`` its ``ValueHead``; ``is_final`` tells a step that
    gives the final answer; ``references``: also the beams scored by chance and by the
    world's oracle (and best-of-N by the oracle). Returns ``{"problems", "modes",
    "verifier", "reliability", "sampling_seconds"}``: the problems' (benchmark, id) in order;
    one row per mode and budget (accuracy per benchmark, ``correct``: 1/0 per problem in
    that order, ``tokens``: sampled per problem in that order, and their mean, a beam's
    seconds; majority at every budget 1 .. max(budgets)); g's AUC as a verifier
    on the N sampled solutions of each problem and its reliability bins; and the seconds
    spent sampling and scoring them (shared by majority and best-of-N)."""
    from pipa.generation import _row_seed
    from pipa.value_head import PolicyWithValueHead

    for n in budgets:
        if n < beam_width or n % beam_width:
            raise ValueError(f"search: budget {n} is not a multiple of beam_width {beam_width}")
    questions = [p["question"] for p in problems]
    prompts = [format_prompt(q) for q in questions]
    n_problems = len(problems)
    value = search.value_scorer(PolicyWithValueHead(model, head), tokenizer, format_prompt,
                                questions, batch_size=batch_size)
    # the policy beam ranks by the proposals' own log-probabilities (value_beam's None)
    scorers: dict[str, search.StepScorer | None] = {"g": value, "policy": None}
    if references:  # they judge the search, not the cell: Table 5 runs them on some cells
        scorers["random"] = search.random_scorer(seed, questions)
        if setting == "world":
            scorers["oracle"] = search.world_oracle(questions)
    rows = []

    def record(mode: str, budget: int, scorer: str | None, found: list[search.Searched],
               seconds: float | None = None) -> None:
        correct = _correct(problems, [f.text for f in found], setting, fallback)
        rows.append({"mode": mode, "budget": budget, "scorer": scorer,
                     "accuracy": _accuracy(problems, correct), "correct": correct,
                     "tokens": [f.tokens for f in found],
                     "tokens_per_problem": sum(f.tokens for f in found) / n_problems,
                     "seconds": None if seconds is None else round(seconds, 1)})

    started = time.perf_counter()
    greedy = search.lm_sampler(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                               temperature=0.0, seed=seed, batch_size=batch_size)
    found = [search.Searched(*drawn[0]) for drawn in search.sample_n(n_problems, greedy, 1)]
    record("greedy", 1, None, found, time.perf_counter() - started)

    started = time.perf_counter()
    sampler = search.lm_sampler(model, tokenizer, prompts, max_new_tokens=max_new_tokens,
                                temperature=temperature, seed=seed, batch_size=batch_size)
    samples = search.sample_n(n_problems, sampler, max(budgets))
    graded = _graded_samples(problems, samples, setting, fallback)
    values = {name: search.step_scores(samples, scorers[name], split_steps)
              for name in ("g", "oracle") if name in scorers}
    sampling_seconds = round(time.perf_counter() - started, 1)
    # each sample's answer as its grader extracted it: what majority vote counts
    answers = [{text: row["extracted"] for (text, _), row in zip(drawn, rows_p)}
               for drawn, rows_p in zip(samples, graded)]
    for m in range(1, max(budgets) + 1):
        record("majority", m, None, [search.majority_vote(drawn[:m], answer_of.get)
                                     for drawn, answer_of in zip(samples, answers)])
    for n in budgets:
        for name, per_problem in values.items():
            for reduce in ("min", "last"):
                record(f"best_of_n_{reduce}", n, name,
                       [search.best_of_n(d[:n], v[:n], reduce)
                        for d, v in zip(samples, per_problem)])
        for name, scorer in scorers.items():
            started = time.perf_counter()
            propose = search.lm_proposer(model, tokenizer, prompts,
                                         max_step_tokens=max_step_tokens,
                                         temperature=temperature,
                                         seed=_row_seed(seed, 0xBEA0 + n),
                                         batch_size=batch_size, is_final=is_final)
            found = search.value_beam(n_problems, propose, scorer, beam_width=beam_width,
                                      n_samples=n // beam_width, max_steps=max_steps,
                                      max_tokens=max_new_tokens)
            record("step_beam", n, name, found, time.perf_counter() - started)

    flat_values = [v for per in values["g"] for v in per]
    flat_correct = [bool(r["correct"]) for per in graded for r in per]
    pooled = [(g, c) for v, c in zip(flat_values, flat_correct) for g in v]
    return {"problems": [{"benchmark": p["benchmark"], "id": p["id"]} for p in problems],
            "modes": rows, "verifier": verifier_metrics(flat_values, flat_correct),
            "reliability": reliability([g for g, _ in pooled], [c for _, c in pooled]),
            "sampling_seconds": sampling_seconds}


@dataclass(frozen=True)
class SearchSpec:
    """What Table 5 searches with (issue #20): ``problems`` test problems per benchmark (a
    fixed subsample drawn with the data seed, the same for every cell), the budgets N, the
    beam width B1 (B2 = N / B1), the sampling temperature, the longest step, and whether the
    cell also runs the reference scorers (chance and the world's oracle)."""

    problems: int | None = Search.problems
    budgets: tuple[int, ...] = Search.budgets
    beam_width: int = Search.beam_width
    temperature: float = Search.temperature
    max_step_tokens: int = Search.max_step_tokens
    references: bool = True

    @classmethod
    def of_cell(cls, search, seed: int) -> SearchSpec:
        """The spec params' ``search`` section (``pipa.config_types.Search``) gives the cell
        of ``seed``."""
        return cls(problems=search.problems, budgets=tuple(search.budgets),
                   beam_width=search.beam_width, temperature=search.temperature,
                   max_step_tokens=search.max_step_tokens,
                   references=seed in search.reference_seeds)


def final_step_test(setting: str) -> Callable[[str], bool]:
    """Does a step give the final answer? The world's answer line, or a ``\\boxed{}``."""
    if setting == "world":
        from pipa.world import extract_answer

        return lambda step: extract_answer(step) is not None
    return lambda step: "\\boxed" in step


def search_cell(cfg, spec: SearchSpec, *, model_name: str, seed: int, align_dir: str | Path,
                world_dir: str | Path, fingerprint: str | None = None) -> dict:
    """Every mode of ``search_modes`` on one trained cell with a value head (its
    ``align/model``), on ``spec.problems`` test problems per benchmark; the record Table 5
    reads, with the spec, the machine and the seconds. Threads are the caller's to set
    (``pipa.hardware.setup_runtime``, or a ``pipa.parallel.fork_map`` worker).
    ``fingerprint``: the cell's ``cell_fingerprint`` if the caller has it (hashing a 7B
    model's weights again would cost minutes)."""
    from pipa.evaluation import grading_setting
    from pipa.hardware import machine
    from pipa.model_io import prompt_formatter

    tok, model, head, problems = load_cell(cfg, model_name, align_dir, world_dir,
                                           spec.problems)
    setting = grading_setting(cfg)
    started = time.perf_counter()
    found = search_modes(model, head, tok, problems,
                         format_prompt=prompt_formatter(cfg, model_name, tok),
                         is_final=final_step_test(setting), setting=setting,
                         fallback=cfg.eval.answer_fallback, budgets=spec.budgets,
                         beam_width=spec.beam_width, temperature=spec.temperature,
                         max_step_tokens=spec.max_step_tokens,
                         max_new_tokens=cfg.eval.max_new_tokens,
                         max_steps=cfg.eval.max_steps, seed=seed,
                         batch_size=cfg.eval.batch_size, references=spec.references)
    # the seconds apart from the record: the record is a function of the cell and the params
    # (same machine, same bytes), the seconds are not
    timing = {"seconds": round(time.perf_counter() - started, 1),
              "sampling_seconds": found.pop("sampling_seconds"), "modes": {}}
    for row in found["modes"]:
        seconds = row.pop("seconds")
        if seconds is not None:
            timing["modes"][f"{row['mode']}/{row['budget']}/{row['scorer']}"] = seconds
    return {**found, "spec": asdict(spec), "seed": seed, "machine": machine(),
            "fingerprint": fingerprint or cell_fingerprint(cfg, align_dir), "timing": timing}


def align_dir(root: str | Path, setting: str, algorithm: str, model: str, seed: int) -> Path:
    """The trained cell a search reads (stage align_<setting>'s output)."""
    return Path(root) / "runs/main" / setting / algorithm / model / f"seed{seed}" / "align"


def write_search(record: dict, out_dir: str | Path) -> Path:
    """``search_cell``'s record, less its seconds, as ``out_dir/search.json`` (what Table 5
    reads), written whole (``pipa.io.atomic_path``); returns the path. The seconds are left
    out, as every stage leaves them out of what it writes: same params, same bytes."""
    from pipa.io import atomic_path

    path = Path(out_dir) / "search.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps({k: v for k, v in record.items() if k != "timing"},
                                  sort_keys=True) + "\n")
    return path


def load_cell(cfg, model_name: str, align_dir: str | Path, world_dir: str | Path,
              problems: int | None) -> tuple:
    """A trained cell with a value head and the test problems it is searched on:
    ``(tokenizer, policy, head, problems)``, ``problems`` test problems per benchmark (a
    subsample drawn with the data seed, the same for every cell; None: all)."""
    from pipa.evaluation import eval_problems
    from pipa.model_io import load_policy_model
    from pipa.value_head import VALUE_HEAD_WEIGHTS, load_value_head
    from pipa.world import subsample

    model_dir = Path(align_dir) / "model"
    tok, model = load_policy_model(cfg, model_name, model_dir)
    if not (model_dir / VALUE_HEAD_WEIGHTS).is_file():
        raise ValueError(f"{model_dir}: no value head ({VALUE_HEAD_WEIGHTS}); Table 5 "
                         "searches the cells of algorithms that train one (PIPA)")
    head = load_value_head(model_dir)
    test = eval_problems(cfg, world_dir, "test")
    chosen = []
    for bench in cfg.data.benchmarks:
        mine = [q for q in test if q["benchmark"] == bench]
        if not mine:
            raise ValueError(f"{world_dir}: no test problem of benchmark {bench!r} (params "
                             "data.benchmarks); re-run the stages that write it (world, "
                             "download)")
        chosen += subsample(mine, problems, cfg.seed)
    return tok, model, head, chosen


def cell_fingerprint(cfg, align_dir: str | Path) -> str:
    """What a cell's search depends on besides its ``SearchSpec``: the bytes of the trained
    model (``align/model``: weights, head, tokenizer) and the params the search reads
    (decoding lengths, answer fallback, batch size, data seed, benchmarks). A cached record
    with another fingerprint is stale."""
    model_dir = Path(align_dir) / "model"
    digest = hashlib.sha256()
    for path in sorted(q for q in model_dir.rglob("*") if q.is_file()):
        digest.update(str(path.relative_to(model_dir)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    used = {"max_new_tokens": cfg.eval.max_new_tokens, "max_steps": cfg.eval.max_steps,
            "answer_fallback": cfg.eval.answer_fallback, "batch_size": cfg.eval.batch_size,
            "seed": cfg.seed, "benchmarks": list(cfg.data.benchmarks)}
    digest.update(json.dumps(used, sort_keys=True).encode())
    return digest.hexdigest()[:20]


def record_is_fresh(path: str | Path, spec: SearchSpec, fingerprint: str) -> bool:
    """Can the record at ``path`` be reused for a search with ``spec`` of a cell whose
    ``cell_fingerprint`` is ``fingerprint``? False when it is missing or stale; a file that
    is not a record is an error naming it (delete it to search the cell again)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        record = json.loads(path.read_text())
        return (record["spec"] == json.loads(json.dumps(asdict(spec)))
                and record.get("fingerprint") == fingerprint)
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise ValueError(f"{path}: not a search record ({err}); delete it to search the "
                         "cell again") from err
