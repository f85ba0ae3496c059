"""Labels of the four settings (paired/unpaired x answer/step) and their statistics.

Rules (SPEC.md):

* answer-level: every step label equals the answer's label (1 correct, 0 incorrect);
* step-level: a correct answer is all 1; in an incorrect answer a step with Q in
  [threshold, 1] is 1, a step with Q in [-1, threshold) is 0;
* paired subset: per question, each correct solution is matched with a distinct incorrect one
  (seeded shuffle); what is left unmatched is dropped, and so is a question without a correct
  or without an incorrect solution (counted in the stats). Unpaired: every solution.

Records follow the "Labelled datasets" schema of docs/ARCHITECTURE.md; ``rid`` is the
solution's ``sid`` (each solution appears at most once in a setting).
"""

from __future__ import annotations

import bisect
import math
import random
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Sequence

from pipa.alphamath import Solution
from pipa.registry import DATA_KINDS as DATA
from pipa.registry import LABEL_LEVELS as LABELS

ZERO_SHARE_THRESHOLDS = (-1.0, -0.5, 0.0, 0.25, 0.5, 0.75, 1.0)


def check_threshold(threshold: float) -> float:
    if (
        isinstance(threshold, bool)
        or not isinstance(threshold, (int, float))
        or not math.isfinite(threshold)
        or not -1.0 <= threshold <= 1.0
    ):
        raise ValueError(
            f"threshold must be a number in the valid range [-1, 1] (a Q value), got "
            f"{threshold!r}"
        )
    return float(threshold)


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def step_labels(solution: Solution, labels: str, threshold: float) -> list[int]:
    """One 0/1 label per step of ``solution`` under the answer- or step-level rule."""
    _check_choice("labels", labels, LABELS)
    threshold = check_threshold(threshold)
    if solution.correct:
        return [1] * len(solution.steps)
    if labels == "answer":
        return [0] * len(solution.steps)
    return [1 if q >= threshold else 0 for q in solution.q_values]


def _record(sol: Solution, labels: str, threshold: float, pair: int | None) -> dict:
    return {
        "rid": sol.sid,
        "qid": sol.qid,
        "sid": sol.sid,
        "question": sol.question,
        "steps": list(sol.steps),
        "correct": bool(sol.correct),
        "step_labels": step_labels(sol, labels, threshold),
        "pair": pair,
    }


def _check_unique_sids(solutions: Sequence[Solution]) -> None:
    dup = [sid for sid, n in Counter(s.sid for s in solutions).items() if n > 1]
    if dup:
        raise ValueError(
            f"solution ids must be unique, {len(dup)} repeat (e.g. {dup[0]!r}); read each "
            "AlphaMath file once, or give merged files' solutions distinct sids"
        )


def label_solutions(solutions: Iterable[Solution], labels: str, threshold: float) -> list[dict]:
    """Unpaired records of every solution, sorted by (qid, row, sid), ``pair`` None."""
    _check_choice("labels", labels, LABELS)
    sols = sorted(solutions, key=lambda s: (s.qid, s.row, s.sid))
    _check_unique_sids(sols)
    check_threshold(threshold)
    return [_record(s, labels, threshold, None) for s in sols]


def paired_subset(
    solutions: Iterable[Solution], seed: int
) -> tuple[list[tuple[Solution, Solution]], dict]:
    """Match, per question, each correct solution with a distinct incorrect one.

    Deterministic: questions in qid order, each question's correct and incorrect solutions
    sorted by row and shuffled with a generator seeded by (seed, qid), then zipped. Returns
    ``(pairs, stats)``: pairs ``(correct, incorrect)`` in pair-index order; stats count
    questions, pairs, dropped questions by reason and unmatched solutions.
    """
    by_q: dict[str, list[Solution]] = defaultdict(list)
    for s in solutions:
        by_q[s.qid].append(s)
    pairs: list[tuple[Solution, Solution]] = []
    dropped = {"no_correct": 0, "no_incorrect": 0}
    unmatched = 0
    for qid in sorted(by_q):
        sols = sorted(by_q[qid], key=lambda s: (s.row, s.sid))
        pos = [s for s in sols if s.correct]
        neg = [s for s in sols if not s.correct]
        if not pos:
            dropped["no_correct"] += 1
            unmatched += len(neg)
            continue
        if not neg:
            dropped["no_incorrect"] += 1
            unmatched += len(pos)
            continue
        rng = random.Random(f"pairs:{seed}:{qid}")
        rng.shuffle(pos)
        rng.shuffle(neg)
        n = min(len(pos), len(neg))
        pairs.extend(zip(pos[:n], neg[:n], strict=True))
        unmatched += len(pos) + len(neg) - 2 * n
    stats = {
        "questions": len(by_q),
        "questions_paired": len(by_q) - sum(dropped.values()),
        "pairs": len(pairs),
        "dropped_questions": dropped,
        "unmatched_solutions": unmatched,
    }
    return pairs, stats


def _step_ends(steps: Sequence[str]) -> list[int]:
    ends, pos = [], 0
    for s in steps:
        pos += len(s)
        ends.append(pos)
    return ends


def step_index(
    steps: Sequence[str], offsets: Sequence[tuple[int, int]], base: int = 0
) -> list[int]:
    """For each token, the index of the step holding its first character.

    ``offsets`` are the tokenizer's (start, end) character offsets; ``base`` is subtracted
    from them (pass ``len(prompt)`` when the offsets cover prompt + response). A token with
    an empty span (start == end, e.g. an EOS appended by the tokenizer) belongs to the last
    step. A non-empty token starting outside the response raises.
    """
    if not steps:
        raise ValueError("step_index needs at least one step")
    ends = _step_ends(steps)
    total = ends[-1]
    last = len(steps) - 1
    out = []
    for t, (start, end) in enumerate(offsets):
        if start == end:
            out.append(last)
            continue
        s = start - base
        if not 0 <= s < total:
            raise ValueError(
                f"token {t} starts at character {s} of the response, outside [0, {total}); "
                "offsets must cover the response only (pass base=len(prompt) otherwise)"
            )
        out.append(bisect.bisect_right(ends, s))
    return out


def token_labels(
    steps: Sequence[str],
    step_labels: Sequence[int],
    offsets: Sequence[tuple[int, int]],
    base: int = 0,
) -> list[int]:
    """Per-token labels c_t: a token gets the label of the step holding its first character
    (see :func:`step_index`; empty-span tokens get the last step's label)."""
    if len(step_labels) != len(steps):
        raise ValueError(f"{len(steps)} steps but {len(step_labels)} step labels")
    return [step_labels[k] for k in step_index(steps, offsets, base)]


def zero_share(records: Iterable[dict]) -> float | None:
    """Share of response characters labelled 0 (None when there are no characters)."""
    n0 = n = 0
    for r in records:
        for s, c in zip(r["steps"], r["step_labels"], strict=True):
            n += len(s)
            n0 += len(s) if c == 0 else 0
    return n0 / n if n else None


def build_setting(
    solutions: Iterable[Solution],
    data: str,
    labels: str,
    threshold: float,
    seed: int,
    max_chars: int | None = None,
    zero_share_thresholds: Sequence[float] = ZERO_SHARE_THRESHOLDS,
    exceeds: Callable[[Solution], Sequence[str]] | None = None,
) -> tuple[list[dict], dict]:
    """Records of one setting and its statistics.

    Solutions with no step, whose response is longer than ``max_chars`` characters (when
    given), or that ``exceeds`` the context of some model (it returns the names of the
    models whose context the solution does not fit: ``pipa.context.context_check``), are
    skipped first, counted by reason (``too_long``) and by model (``too_long_by_model``), so
    a pair forms only from solutions every model can train on; then the paired subset is
    taken (paired) or everything kept (unpaired), and labels applied. Paired records are sorted by pair,
    correct first; unpaired by (qid, row, sid).

    Stats: input and output counts of questions and solutions, positives/negatives, pairs,
    skipped solutions and dropped questions by reason, unmatched solutions, steps and
    characters labelled 0/1, ``char_zero_share`` (share of response characters labelled 0)
    and ``zero_share_by_threshold``: that share under the step-level rule at each threshold
    of ``zero_share_thresholds`` for the same records, so one sees how it moves with the
    threshold (for answer labels the setting's own share does not depend on it).
    """
    _check_choice("data", data, DATA)
    _check_choice("labels", labels, LABELS)
    threshold = check_threshold(threshold)
    for t in zero_share_thresholds:
        check_threshold(t)
    if max_chars is not None and max_chars < 1:
        raise ValueError(f"max_chars must be a positive number of characters, got {max_chars}")
    sols = list(solutions)
    _check_unique_sids(sols)
    skipped = {"empty_steps": 0, "too_long": 0}
    by_model: Counter = Counter()
    kept = []
    for s in sols:
        over = list(exceeds(s)) if exceeds is not None and s.steps else []
        by_model.update(over)
        if not s.steps:
            skipped["empty_steps"] += 1
        elif (max_chars is not None and sum(len(x) for x in s.steps) > max_chars) or over:
            skipped["too_long"] += 1
        else:
            kept.append(s)
    if data == "paired":
        pairs, pstats = paired_subset(kept, seed)
        records = []
        for k, (pos, neg) in enumerate(pairs):
            records.append(_record(pos, labels, threshold, k))
            records.append(_record(neg, labels, threshold, k))
        chosen = [s for pair in pairs for s in pair]
        dropped, unmatched, n_pairs = (
            pstats["dropped_questions"], pstats["unmatched_solutions"], pstats["pairs"]
        )
    else:
        records = label_solutions(kept, labels, threshold)
        by_sid = {s.sid: s for s in kept}
        chosen = [by_sid[r["sid"]] for r in records]
        dropped, unmatched, n_pairs = {"no_correct": 0, "no_incorrect": 0}, 0, 0

    steps_labelled = Counter({"0": 0, "1": 0})
    chars_labelled = Counter({"0": 0, "1": 0})
    for r in records:
        for s, c in zip(r["steps"], r["step_labels"], strict=True):
            steps_labelled[str(c)] += 1
            chars_labelled[str(c)] += len(s)
    by_threshold = {}
    for t in zero_share_thresholds:
        step_recs = (
            {"steps": s.steps, "step_labels": step_labels(s, "step", t)} for s in chosen
        )
        by_threshold[f"{float(t):g}"] = zero_share(step_recs)
    stats = {
        "data": data,
        "labels": labels,
        "threshold": threshold,
        "seed": seed,
        "max_chars": max_chars,
        "input_questions": len({s.qid for s in sols}),
        "input_solutions": len(sols),
        "skipped_solutions": skipped,
        **({"too_long_by_model": dict(sorted(by_model.items()))} if exceeds is not None
           else {}),
        "dropped_questions": dropped,
        "unmatched_solutions": unmatched,
        "questions": len({r["qid"] for r in records}),
        "solutions": len(records),
        "positives": sum(r["correct"] for r in records),
        "negatives": sum(not r["correct"] for r in records),
        "pairs": n_pairs,
        "steps_labelled": dict(steps_labelled),
        "chars_labelled": dict(chars_labelled),
        "char_zero_share": zero_share(records),
        "zero_share_by_threshold": by_threshold,
    }
    return records, stats


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
