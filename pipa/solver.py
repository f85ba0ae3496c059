"""The built-in world's flawed solver: the solutions the base models learn from.

Its errors are context-dependent misconceptions (a carry dropped where a carry applies, a
borrow dropped where a borrow applies), not noise, so that a step-level label can say which
step went wrong (``pipa.world`` describes the world; its ``errors`` knobs set the rates).
``solve`` writes one solution, ``pretraining_corpus`` the documents a family's base model
is pretrained on. Apart from ``pipa.world`` so that the world's problems, formats and
checker, which every stage reads, stay one module a reader can hold in their head.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from pipa.world import (
    DEFAULT_ERRORS,
    DEFAULT_WORLD_CFG,
    MECHANISMS,
    NAMES,
    NOUNS,
    STYLES,
    TIERS,
    _check_errors,
    _draw_chain,
    _sig_or_self,
    apply_op,
    format_prompt,
    format_question,
    make_problem,
    merge_cfg,
    parse_question,
    render_steps,
    signature,
)


def _digits(n: int) -> list[int]:
    return [int(c) for c in reversed(str(n))]


def add_dropping_carries(a: int, b: int) -> int:
    """Column addition that never carries between columns (the top column is written whole)."""
    da, db = _digits(a), _digits(b)
    width = max(len(da), len(db))
    out = 0
    for i in range(width):
        s = (da[i] if i < len(da) else 0) + (db[i] if i < len(db) else 0)
        out += (s if i == width - 1 else s % 10) * 10**i
    return out


def sub_dropping_borrows(a: int, b: int) -> int:
    """Column subtraction (a >= b >= 0) that borrows 10 for a column whose subtrahend digit
    exceeds the minuend digit but never takes the borrow from the next column."""
    da, db = _digits(a), _digits(b)
    out = 0
    for i, x in enumerate(da):
        y = db[i] if i < len(db) else 0
        out += (x - y + 10 if x < y else x - y) * 10**i
    return out


def mul_dropping_carries(a: int, b: int) -> int:
    """Long multiplication whose digit products never carry into the next column (the top
    digit's product is written whole); partial products are added correctly."""
    da = _digits(a)
    total = 0
    for j, y in enumerate(_digits(b)):
        partial = 0
        for i, x in enumerate(da):
            p = x * y
            partial += (p if i == len(da) - 1 else p % 10) * 10**i
        total += partial * 10**j
    return total


def miscopy(n: int, rng: random.Random) -> int:
    """A wrongly copied number: two differing adjacent digits swapped, or one digit changed by
    one. Never equal to ``n``, never a leading zero, never 0."""
    s = str(abs(n))
    swaps = [i for i in range(len(s) - 1) if s[i] != s[i + 1] and not (i == 0 and s[1] == "0")]
    if swaps and rng.random() < 0.5:
        i = rng.choice(swaps)
        t = s[:i] + s[i + 1] + s[i] + s[i + 2:]
    else:
        i = rng.randrange(len(s))
        d = int(s[i])
        lowest = 1 if i == 0 else 0
        options = [x for x in (d - 1, d + 1) if lowest <= x <= 9]
        t = s[:i] + str(rng.choice(options)) + s[i + 1:]
    out = int(t)
    return -out if n < 0 else out


def _unit_hash(*key: Any) -> float:
    h = hashlib.sha1(repr(key).encode()).hexdigest()
    return int(h[:13], 16) / 16**13


@dataclass
class Trace:
    """What the flawed solver did: the rendered steps, the values written, the operations as
    written (operands possibly miscopied), the mechanisms that changed a value
    (``(step index, mechanism)``; step -1 is the start value) and the verdict."""

    steps: list[str]
    values: list[int]
    ops: list[tuple[str, int]]
    errors: list[tuple[int, str]] = field(default_factory=list)
    correct: bool = True


def solve_trace(problem: dict, style: str, error_cfg: dict | None, rng: random.Random) -> Trace:
    """Run the flawed solver; see :func:`solve`."""
    cfg = merge_cfg(DEFAULT_ERRORS, error_cfg)
    for key in MECHANISMS:  # mechanisms not named in error_cfg are off
        if error_cfg is None or key not in error_cfg:
            cfg[key] = 0.0
    _check_errors(cfg)
    fixed = cfg["mode"] == "fixed"
    salt = cfg["salt"]

    def fires(mech: str, *key: Any) -> bool:
        rate = cfg[mech]
        if rate <= 0.0:
            return False
        u = _unit_hash(mech, salt, *key) if fixed else rng.random()
        return u < rate

    def copy_of(n: int, where: int) -> int:
        if fires("copy", n, where):
            sub_rng = random.Random(f"copy:{salt}:{n}:{where}") if fixed else rng
            return miscopy(n, sub_rng)
        return n

    start, ops = parse_question(problem["question"])
    errors: list[tuple[int, str]] = []
    value = copy_of(start, -1)
    if value != start:
        errors.append((-1, "copy"))
    values = [value]
    used_ops: list[tuple[str, int]] = []
    for i, (op, b_true) in enumerate(ops):
        a = values[-1]
        b = copy_of(b_true, i)
        if op == "/" and b == 0:  # cannot happen with miscopy, kept as a guard
            b = b_true
        if b != b_true:
            errors.append((i, "copy"))
        result = apply_op(a, op, b)
        if a >= 0 and b >= 0:
            if op == "+":
                wrong = add_dropping_carries(a, b)
                if wrong != result and fires("carry", a, b):
                    result = wrong
                    errors.append((i, "carry"))
            elif op == "-" and a >= b:
                wrong = sub_dropping_borrows(a, b)
                if wrong != result and fires("borrow", a, b):
                    result = wrong
                    errors.append((i, "borrow"))
            elif op == "*":
                wrong = mul_dropping_carries(a, b)
                if wrong != result and fires("mul_carry", a, b):
                    result = wrong
                    errors.append((i, "mul_carry"))
        if fires("slip", a, op, b):
            k = int(cfg["slip_max"])
            sub_rng = random.Random(f"slip:{salt}:{a}:{op}:{b}") if fixed else rng
            delta = sub_rng.choice([d for d in range(-k, k + 1) if d != 0])
            result = result + delta if result + delta >= 0 else result - delta
            errors.append((i, "slip"))
        used_ops.append((op, b))
        values.append(result)
    steps = render_steps(used_ops, values, style)
    correct = str(values[-1]) == problem["answer"]
    return Trace(steps, values, used_ops, errors, correct)


def solve(
    problem: dict, style: str, error_cfg: dict | None, rng: random.Random
) -> tuple[list[str], bool]:
    """Solve ``problem`` in ``style`` with the flawed solver: ``(steps, correct)``.

    ``error_cfg`` holds the rates of the mechanisms (a mechanism it does not name is off;
    ``None`` gives the gold solution):

    * ``copy``: each number copied from the question (start value, each operand) is miscopied
      with this probability (two adjacent digits swapped, or one digit changed by one);
    * ``carry``: ``a+b`` whose column addition carries between columns drops every carry;
    * ``borrow``: ``a-b`` where some digit of b exceeds a's digit drops every borrow;
    * ``mul_carry``: ``a*b`` whose long multiplication carries drops the carries;
    * ``slip``: the result of an operation is off by 1..``slip_max``.

    A digit mechanism only fires where it changes the result (a borrow, carry is needed), so
    its rate is the probability of the misconception in that context; ``mode: fixed`` makes
    the decision a hash of the operands (the same context always gets the same mistake).
    Errors propagate: later steps compute on the written values, ``/`` truncates when a wrong
    value makes it inexact. ``correct`` compares the final written value with the gold answer
    (an error can in rare cases be undone by a later truncating division).
    """
    trace = solve_trace(problem, style, error_cfg, rng)
    return trace.steps, trace.correct


def pretraining_corpus(
    problems: list[dict],
    style: str,
    error_cfg: dict | None,
    n_docs: int,
    seed: int,
    *,
    exclude: Iterable[str] = (),
    fresh_share: float = 0.0,
    tiers_cfg: dict | None = None,
) -> list[str]:
    """``n_docs`` documents ``format_prompt(question) + solution`` written by the flawed solver
    in ``style`` (``"ds"``: the self-alignment family, ``"qw"``: the distribution-shift one).

    A document's problem is drawn (with replacement) from ``problems``, the pool (train
    problems), or with probability ``fresh_share`` freshly generated (tiers as in the pool).
    ``exclude`` holds the val/test questions (or problems): a pool problem in it, or of split
    val/test, raises; fresh problems never match it.
    """
    if style not in STYLES:
        raise ValueError(f"unknown solution style {style!r}; use one of {STYLES}")
    if not 0.0 <= fresh_share <= 1.0:
        raise ValueError(f"fresh_share must be in [0, 1], got {fresh_share}")
    banned = {_sig_or_self(q["question"] if isinstance(q, dict) else q) for q in exclude}
    for p in problems:
        if p.get("split") in ("val", "test"):
            raise ValueError(
                f"pretraining pool holds {p['id']} of split {p['split']}; pass train problems only"
            )
        if signature(p["question"]) in banned:
            raise ValueError(
                f"pretraining pool problem {p['id']} ({p['question']!r}) equals a val/test "
                "question; remove it from the pool"
            )
    if not problems and fresh_share < 1.0:
        raise ValueError("pretraining_corpus needs a non-empty pool unless fresh_share == 1")
    tiers = sorted({p["tier"] for p in problems}) or list(TIERS)
    tcfgs = merge_cfg(DEFAULT_WORLD_CFG["tiers"], tiers_cfg)
    rng = random.Random(f"corpus:{seed}:{style}")
    docs = []
    for _ in range(n_docs):
        if rng.random() < fresh_share:
            tier = rng.choice(tiers)
            p = _fresh_problem(rng, tier, tcfgs[tier], banned)
        else:
            p = rng.choice(problems)
        steps, _ = solve(p, style, error_cfg, rng)
        docs.append(format_prompt(p["question"]) + "".join(steps))
    return docs


def _fresh_problem(rng: random.Random, tier: str, tcfg: dict, banned: set[str]) -> dict:
    for _ in range(10000):
        chain = _draw_chain(rng, tcfg)
        if chain is None:
            continue
        question = format_question(rng.choice(NAMES), rng.choice(NOUNS), *chain)
        if signature(question) not in banned:
            return make_problem(f"{tier}-fresh", tier, "train", question)
    raise ValueError(f"could not draw a fresh {tier} problem outside the excluded set")


