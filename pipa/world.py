"""The built-in math world: terse arithmetic chains, an exact checker and two solution
styles; its flawed solver, whose errors are context-dependent misconceptions, is
``pipa.solver``.

A question reads ``Max 20 toys *3 -8 +85 ?``: a start value followed by the operations in the
order the solution applies them. The gold solution (DS style) is one step per operation and a
final-answer step::

    20*3=60
    60-8=52
    52+85=137
    Answer: 137

The QW style annotates every equation with the operation's name and ends with a sentence
(``20*3=60 (multiply)`` ... ``So the answer is 137.``). Each line still starts with the same
equation on purpose; two calibrations that did not measured why (README): arithmetic in
words (``20 times 3 is 60.``) left the QW base model knowing sums only in that surface form
(0.4% / 0.2% after SFT), and the operation's name in front (``Multiply: 20*3=60``) made it
copy the operator from its own word instead of from the question (3.2% / 0.8%: ``-9``
became ``*7`` once the word was gone). The shift this family stands for is one of style,
not of what arithmetic it knows.

Knobs (all in :data:`DEFAULT_WORLD_CFG`; the lead mirrors it under ``world:`` in params.yaml):

``sizes``
    ``{tier: {split: n}}`` problems per tier and split.
``tiers``
    per tier: ``n_ops`` [lo, hi] operations per problem; ``ops`` the allowed operators;
    ``start``/``add``/``sub``/``mul``/``div`` inclusive [lo, hi] ranges of the start value and
    of each operator's operand; ``max_value`` exclusive bound on every intermediate value.
    Every intermediate value is in [1, max_value) by construction and every ``/`` is exact.
``errors``
    rates of the flawed solver's mechanisms, see ``pipa.solver.solve``.
``corpus``
    ``n_docs`` documents per pretraining corpus and ``fresh_share``, the share of documents
    built on freshly generated problems instead of the given pool.
"""

from __future__ import annotations

import copy
import random
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from pipa.config_types import Config, thawed
from pipa.io import atomic_path, read_jsonl, write_json, write_jsonl

TIERS = ("gsm", "math")
SPLITS = ("train", "val", "test")
STYLES = ("ds", "qw")
OPS = ("+", "-", "*", "/")
MECHANISMS = ("copy", "carry", "borrow", "mul_carry", "slip")

DEFAULT_ERRORS: dict[str, Any] = {
    # Probability that the mechanism fires where it applies (0 disables it).
    "borrow": 0.5,      # a - b with some digit of b above a's digit: every borrow is dropped
    "carry": 0.3,       # a + b with a carry between columns: every inner carry is dropped
    "mul_carry": 0.4,   # a * b with a digit product >= 10 (not in the top column): carries dropped
    "copy": 0.03,       # per number copied from the question: two digits swapped or one changed
    "slip": 0.02,       # per operation: the result is off by 1..slip_max
    "slip_max": 2,
    # "random": each occurrence draws from the rng (a misconception held with probability p);
    # "fixed": the decision is a hash of (mechanism, operands, salt), so the same operands always
    # get the same mistake in every document (a fully consistent misconception).
    "mode": "random",
    "salt": 0,
}

DEFAULT_WORLD_CFG: dict[str, Any] = {
    "sizes": {
        "gsm": {"train": 2000, "val": 200, "test": 500},
        "math": {"train": 2000, "val": 200, "test": 500},
    },
    "tiers": {
        "gsm": {
            "n_ops": [2, 3],
            "ops": ["+", "-", "*"],
            "start": [2, 99],
            "add": [2, 99],
            "sub": [2, 99],
            "mul": [2, 9],
            "div": [2, 9],
            "max_value": 1000,
        },
        "math": {
            "n_ops": [4, 6],
            "ops": ["+", "-", "*", "/"],
            "start": [10, 999],
            "add": [10, 999],
            "sub": [10, 999],
            "mul": [2, 12],
            "div": [2, 12],
            "max_value": 10000,
        },
    },
    "errors": DEFAULT_ERRORS,
    "corpus": {"n_docs": 20000, "fresh_share": 0.0},
}

NAMES = ("Max", "Ann", "Bo", "Lee", "Sam", "Kim", "Tom", "Eve", "Zoe", "Ray", "Ida", "Jon")
NOUNS = ("toys", "apples", "coins", "books", "cards", "pens", "eggs", "shells", "stamps", "beads")
_OP_KEY = {"+": "add", "-": "sub", "*": "mul", "/": "div"}
_OP_WORD = {"+": "add", "-": "subtract", "*": "multiply", "/": "divide"}


# ----------------------------------------------------------------------------- config


def merge_cfg(base: dict, override: dict | None) -> dict:
    """Deep-merge ``override`` into a copy of ``base`` (dicts merge, everything else replaces)."""
    out = copy.deepcopy(base)
    for key, value in (override or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_cfg(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def world_cfg(cfg: dict | None = None) -> dict:
    """The full world config: ``cfg`` over :data:`DEFAULT_WORLD_CFG`.

    A dict whose keys are tier names (``{"gsm": {"train": 20, ...}, ...}``) is read as
    ``{"sizes": cfg}``, the shorthand of the brief.
    """
    cfg = dict(cfg or {})
    if cfg and set(cfg) <= set(TIERS):
        cfg = {"sizes": cfg}
    out = merge_cfg(DEFAULT_WORLD_CFG, cfg)
    if "sizes" in cfg:  # sizes replace (a tier left out is not generated)
        out["sizes"] = copy.deepcopy(cfg["sizes"])
    for tier in out["sizes"]:
        if tier not in out["tiers"]:
            raise ValueError(f"world.sizes names tier {tier!r}; known tiers: {sorted(out['tiers'])}")
        for split in out["sizes"][tier]:
            if split not in SPLITS:
                raise ValueError(f"world.sizes.{tier} names split {split!r}; use one of {SPLITS}")
    for tier, tcfg in out["tiers"].items():
        _check_tier_cfg(tier, tcfg)
    _check_errors(out["errors"])
    return out


def _check_tier_cfg(tier: str, tcfg: dict) -> None:
    where = f"world.tiers.{tier}"
    lo, hi = tcfg["n_ops"]
    if not 1 <= lo <= hi:
        raise ValueError(f"{where}.n_ops must be [lo, hi] with 1 <= lo <= hi, got {tcfg['n_ops']}")
    bad = [op for op in tcfg["ops"] if op not in OPS]
    if bad or not tcfg["ops"]:
        raise ValueError(f"{where}.ops must be a non-empty subset of {OPS}, got {tcfg['ops']}")
    for key in ("start", "add", "sub", "mul", "div"):
        lo, hi = tcfg[key]
        if not 1 <= lo <= hi:
            raise ValueError(f"{where}.{key} must be [lo, hi] with 1 <= lo <= hi, got {[lo, hi]}")
    if tcfg["start"][0] >= tcfg["max_value"]:
        raise ValueError(f"{where}.start must lie below max_value={tcfg['max_value']}")


def _check_errors(errors: dict) -> None:
    for key in MECHANISMS:
        rate = errors.get(key, 0.0)
        if not (isinstance(rate, (int, float)) and 0.0 <= rate <= 1.0):
            raise ValueError(f"world.errors.{key} is a probability in [0, 1], got {rate!r}")
    if errors.get("mode", "random") not in ("random", "fixed"):
        raise ValueError(f"world.errors.mode must be 'random' or 'fixed', got {errors['mode']!r}")
    if int(errors.get("slip_max", 2)) < 1:
        raise ValueError("world.errors.slip_max must be >= 1")


# ----------------------------------------------------------------------------- problems


def format_question(name: str, noun: str, start: int, ops: list[tuple[str, int]]) -> str:
    return f"{name} {start} {noun} " + " ".join(f"{op}{b}" for op, b in ops) + " ?"


_OPERATION_RE = re.compile(r"^([+\-*/])(\d+)$")


def parse_question(question: str) -> tuple[int, list[tuple[str, int]]]:
    """``"Max 20 toys *3 -8 +85 ?"`` -> ``(20, [("*", 3), ("-", 8), ("+", 85)])``."""
    start = None
    ops: list[tuple[str, int]] = []
    for tok in question.split():
        if start is None:
            if tok.isdigit():
                start = int(tok)
            continue
        m = _OPERATION_RE.match(tok)
        if m:
            ops.append((m.group(1), int(m.group(2))))
    if start is None or not ops:
        raise ValueError(f"not a world question (needs a start number and operations): {question!r}")
    return start, ops


def signature(question: str) -> str:
    """The numeric content of a question (name and noun removed): the key for deduplication,
    so two questions that differ only in the name or noun count as the same problem."""
    start, ops = parse_question(question)
    return f"{start} " + " ".join(f"{op}{b}" for op, b in ops)


def apply_op(a: int, op: str, b: int) -> int:
    """Exact operation; ``/`` truncates toward zero (only inexact after a solver error)."""
    if op == "+":
        return a + b
    if op == "-":
        return a - b
    if op == "*":
        return a * b
    if op == "/":
        q = abs(a) // abs(b)
        return q if (a >= 0) == (b >= 0) else -q
    raise ValueError(f"unknown operator {op!r}")


def _draw_chain(rng: random.Random, tcfg: dict) -> tuple[int, list[tuple[str, int]]] | None:
    max_value = tcfg["max_value"]
    start = rng.randint(tcfg["start"][0], min(tcfg["start"][1], max_value - 1))
    n_ops = rng.randint(*tcfg["n_ops"])
    value = start
    ops: list[tuple[str, int]] = []
    for _ in range(n_ops):
        choices = list(tcfg["ops"])
        rng.shuffle(choices)
        for op in choices:
            lo, hi = tcfg[_OP_KEY[op]]
            if op == "+":
                hi = min(hi, max_value - 1 - value)
                cands = None
            elif op == "-":
                hi = min(hi, value - 1)  # keep every value >= 1
                cands = None
            elif op == "*":
                hi = min(hi, (max_value - 1) // value)
                cands = None
            else:
                cands = [d for d in range(lo, min(hi, value) + 1) if value % d == 0]
            if cands is None and lo <= hi:
                b = rng.randint(lo, hi)
                break
            if cands:
                b = rng.choice(cands)
                break
        else:
            return None
        ops.append((op, b))
        value = apply_op(value, op, b)
    return start, ops


def gold_values(start: int, ops: list[tuple[str, int]]) -> list[int]:
    values = [start]
    for op, b in ops:
        values.append(apply_op(values[-1], op, b))
    return values


def make_problem(pid: str, tier: str, split: str, question: str) -> dict:
    start, ops = parse_question(question)
    values = gold_values(start, ops)
    return {
        "id": pid,
        "tier": tier,
        "split": split,
        "question": question,
        "answer": str(values[-1]),
        "steps": render_steps(ops, values, "ds"),
    }


def generate_problems(
    n: int,
    tier: str,
    seed: int | str,
    split: str = "train",
    tier_cfg: dict | None = None,
    exclude: Iterable[str] = (),
    rng: random.Random | None = None,
) -> list[dict]:
    """``n`` distinct problems of ``tier`` (ids ``{tier}-{split}-{i:05d}``), deterministic from
    ``seed`` (or drawn from ``rng`` when given). ``exclude``: signatures (see :func:`signature`)
    or questions that must not be produced; it is not modified."""
    if tier_cfg is None:
        if tier not in DEFAULT_WORLD_CFG["tiers"]:
            raise ValueError(f"unknown tier {tier!r}; known: {TIERS} (or pass tier_cfg)")
        tier_cfg = DEFAULT_WORLD_CFG["tiers"][tier]
    _check_tier_cfg(tier, tier_cfg)
    rng = rng or random.Random(f"world:{seed}:{tier}:{split}")
    seen = {_sig_or_self(q) for q in exclude}
    out: list[dict] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise ValueError(
                f"could only generate {len(out)} of {n} distinct {tier} problems; widen the "
                f"number ranges or n_ops of world.tiers.{tier}, or ask for fewer problems"
            )
        chain = _draw_chain(rng, tier_cfg)
        if chain is None:
            continue
        start, ops = chain
        question = format_question(rng.choice(NAMES), rng.choice(NOUNS), start, ops)
        sig = signature(question)
        if sig in seen:
            continue
        seen.add(sig)
        out.append(make_problem(f"{tier}-{split}-{len(out):05d}", tier, split, question))
    return out


def _sig_or_self(q: str) -> str:
    try:
        return signature(q)
    except ValueError:
        return q


def make_splits(cfg: dict | None, seed: int) -> dict[str, list[dict]]:
    """Train/val/test problems of every tier: ``{split: [problem, ...]}``, each split holding
    the tiers in order (gsm first). No two problems anywhere share a signature, so splits are
    disjoint by question text and by numeric content. Test is drawn first, then val, then
    train, so changing the train size leaves val and test unchanged."""
    cfg = world_cfg(cfg)
    used: set[str] = set()
    by_split: dict[str, list[dict]] = {s: [] for s in SPLITS}
    for tier in sorted(cfg["sizes"], key=lambda t: (TIERS.index(t) if t in TIERS else 99, t)):
        for split in ("test", "val", "train"):
            n = int(cfg["sizes"][tier].get(split, 0))
            probs = generate_problems(n, tier, seed, split, cfg["tiers"][tier], exclude=used)
            used.update(signature(p["question"]) for p in probs)
            by_split[split].extend(probs)
    return by_split


# ----------------------------------------------------------------------------- text


def format_prompt(question: str) -> str:
    """The text every model conditions on; the response starts right after it."""
    return f"Q: {question}\nA:\n"


def render_step(a: int, op: str, b: int, result: int, style: str) -> str:
    if style == "ds":
        return f"{a}{op}{b}={result}\n"
    if style == "qw":
        return f"{a}{op}{b}={result} ({_OP_WORD[op]})\n"
    raise ValueError(f"unknown solution style {style!r}; use one of {STYLES}")


def render_answer(answer: int | str, style: str) -> str:
    if style == "ds":
        return f"Answer: {answer}\n"
    if style == "qw":
        return f"So the answer is {answer}.\n"
    raise ValueError(f"unknown solution style {style!r}; use one of {STYLES}")


def render_steps(problem_ops: list[tuple[str, int]], values: list[int], style: str) -> list[str]:
    """Steps of a solution: ``problem_ops[i] = (op, operand as written)``, ``values[0]`` the
    start value as written and ``values[i + 1]`` the result written for operation i; the last
    value is the final answer. Every step ends with ``"\\n"``."""
    if len(values) != len(problem_ops) + 1:
        raise ValueError(
            f"render_steps needs len(values) == len(problem_ops) + 1, got {len(values)} values "
            f"for {len(problem_ops)} operations"
        )
    steps = [
        render_step(values[i], op, b, values[i + 1], style) for i, (op, b) in enumerate(problem_ops)
    ]
    steps.append(render_answer(values[-1], style))
    return steps


_ANSWER_RE = re.compile(
    r"^[ \t]*(?:Answer:[ \t]*(-?\d+)|So the answer is[ \t]+(-?\d+)\.?)[ \t]*$", re.MULTILINE
)


def extract_answer(text: str) -> str | None:
    """The first final-answer line of either style (``Answer: 137`` or ``So the answer is
    137.``) as a canonical integer string; None when the text has none (malformed). The first
    one counts: what a model writes after committing to an answer is ignored."""
    m = _ANSWER_RE.search(text)
    if m is None:
        return None
    return str(int(m.group(1) if m.group(1) is not None else m.group(2)))


def check(gold_answer: str, response_text: str) -> bool:
    """Exact integer comparison of the extracted final answer with the gold answer."""
    pred = extract_answer(response_text)
    if pred is None:
        return False
    try:
        return int(pred) == int(str(gold_answer).strip())
    except ValueError:
        return False


def split_steps(text: str) -> list[str]:
    """Split a generated response into steps (lines, each ending with ``"\\n"``), cut after the
    first final-answer step. A last line without a newline gets one, so the steps concatenate
    to the (possibly truncated) text plus at most that newline."""
    steps: list[str] = []
    for line in re.findall(r"[^\n]*\n|[^\n]+$", text):
        if not line.endswith("\n"):
            line += "\n"
        steps.append(line)
        if _ANSWER_RE.search(line):
            break
    return steps


# ---------------------------------------------------------------- the stage


def make_world(cfg: Config, out_dir: str | Path) -> dict:
    """Stage world: problems (train/val/test × two tiers) and each family's pretraining corpus,
    written to ``out_dir`` whole (``stats.json`` beside them)."""
    from pipa.solver import pretraining_corpus  # the solver builds on this module

    wcfg = world_cfg(thawed(cfg.world))  # this module's own knobs, over its defaults
    seed = cfg.seed
    splits = make_splits(wcfg, seed)
    heldout = [p["question"] for s in ("val", "test") for p in splits[s]]
    stats: dict = {"problems": {s: len(v) for s, v in splits.items()}}
    families = cfg.model_families
    with atomic_path(out_dir) as tmp:
        tmp.mkdir()
        for split, problems in splits.items():
            write_jsonl(tmp / f"{split}.jsonl", problems)
        for index, name in enumerate(sorted(families)):
            docs = pretraining_corpus(
                splits["train"], families[name].style, wcfg["errors"],
                int(wcfg["corpus"]["n_docs"]), seed + 1000 + index, exclude=heldout,
                fresh_share=float(wcfg["corpus"]["fresh_share"]), tiers_cfg=wcfg["tiers"],
            )
            # NUL never occurs in the world's text, so it separates documents safely.
            (tmp / f"corpus_{name}.txt").write_text("\x00".join(docs))
            stats[f"corpus_{name}_docs"] = len(docs)
        write_json(tmp / "stats.json", stats)
    return stats


def load_split(world_dir: str | Path, split: str) -> list[dict]:
    """The built-in world's problems of ``split`` (train | val | test)."""
    return read_jsonl(Path(world_dir) / f"{split}.jsonl")


def subsample(rows: list, n: int | None, seed: int) -> list:
    """``n`` of ``rows`` drawn with ``seed``, in id order (all of them when ``n`` is None or
    at least their number): the problems sampling and validation use."""
    if n is None or n >= len(rows):
        return rows
    rng = random.Random(seed)
    return sorted(rng.sample(rows, n), key=lambda r: r["id"])
