"""The AlphaMath record format: one validated reader for the real file and the world's data,
and an atomic writer.

A file is a JSON list of rows ``{"instruction": "<question> ... </question>", "input": "",
"output": <JSON string of a list of steps>}``, several rows per question; a step is
``{"step": str, "P": float, "Q": float, "depth": int}``, and the last step's Q is +1 for a
correct final answer, -1 for an incorrect one. The response text of a solution is the plain
concatenation of its step strings (no separator added).

Only ``step`` and ``Q`` of a step are read (``P`` and ``depth`` are not used downstream and
not required). ``input`` is optional; AlphaMath leaves it empty. In Alpaca's layout (a
generic ``instruction`` such as "Solve the problem", the question in ``input``) the question
is read from ``input`` when ``instruction`` has no ``<question>`` tags: taking the instruction
would collapse every row into one question.

A file with bad rows is refused whole: every bad row (up to ``MAX_LISTED``) is named in one
message, with the file, the row, the question, what is wrong and the fix, so a user fixes
them in one pass; ``on_error="skip"`` drops them instead, counted. A file with no solution
left is an error too, never an empty result.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import re
import warnings
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from pipa.io import DataError, atomic_path, listed

ON_ERROR = ("raise", "skip")

# Reasons a row is rejected (the keys of read_with_stats' skipped counts).
REASONS = {
    "not_an_object": "make the row a JSON object with instruction, input and output",
    "missing_field": "give the row an 'instruction' (string) and an 'output' (JSON string)",
    "empty_question": "put the question text between <question> and </question>",
    "output_not_json": "make 'output' a JSON string encoding the list of steps (json.dumps)",
    "output_not_list": "make 'output' encode a JSON list of step objects",
    "empty_steps": "give the solution at least one step (the last one the final answer)",
    "bad_step": "make every step an object with a string 'step' and a numeric 'Q'",
    "q_out_of_range": "keep every Q a finite number in [-1, 1]",
    "last_q_not_pm1": "set the last step's Q to exactly 1 (correct answer) or -1 (incorrect)",
}


@dataclass(frozen=True)
class Solution:
    qid: str
    sid: str
    question: str
    steps: list[str]
    q_values: list[float]
    correct: bool
    row: int

    @property
    def text(self) -> str:
        """The response: the steps concatenated exactly."""
        return "".join(self.steps)


class RowError(DataError):
    """A rejected row; ``reason`` is one of :data:`REASONS`."""

    def __init__(self, path: str, row: int, question: str | None, reason: str, detail: str):
        self.path, self.row, self.question, self.reason = path, row, question, reason
        q = "unknown question" if question is None else f"question {_short(question)!r}"
        super().__init__(
            f"{path}: row {row} ({q}): {detail}. Fix: {REASONS[reason]} "
            f"(or read with on_error='skip' to drop such rows, counted)."
        )


def _short(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return text if len(text) <= n else text[: n - 3] + "..."


def question_id(question: str) -> str:
    """Stable id of a question: sha1 of its stripped text, 12 hex digits."""
    return hashlib.sha1(question.strip().encode("utf-8")).hexdigest()[:12]


_QUESTION_RE = re.compile(r"<question>(.*?)</question>", re.DOTALL)


def extract_question(instruction: str) -> str:
    """The text between ``<question>`` and ``</question>``, stripped; an instruction without
    the tags is taken whole (stripped)."""
    m = _QUESTION_RE.search(instruction)
    return (m.group(1) if m else instruction).strip()


def _is_number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def validate_steps(steps) -> tuple[str, str] | None:
    """``None`` when ``steps`` (a decoded output) is a valid step list, else (reason, detail)."""
    if not isinstance(steps, list):
        return "output_not_list", f"'output' decodes to {type(steps).__name__}, not a list"
    if not steps:
        return "empty_steps", "'output' is an empty step list"
    for k, st in enumerate(steps):
        if not isinstance(st, dict):
            return "bad_step", f"step {k} is {type(st).__name__}, not an object"
        missing = [f for f in ("step", "Q") if f not in st]
        if missing:
            return "bad_step", f"step {k} lacks {', '.join(repr(f) for f in missing)}"
        if not isinstance(st["step"], str):
            return "bad_step", f"step {k}'s 'step' is {type(st['step']).__name__}, not a string"
        q = st["Q"]
        if not _is_number(q):
            return "bad_step", f"step {k}'s Q is {q!r}, not a number"
        if not (math.isfinite(q) and -1.0 <= q <= 1.0):
            return "q_out_of_range", f"step {k}'s Q is {q!r}, outside [-1, 1]"
    last = steps[-1]["Q"]
    if last not in (1, -1):
        return "last_q_not_pm1", f"the last step's Q is {last!r}, not exactly 1 or -1"
    return None


def _parse_row(path: str, i: int, row) -> tuple[str, list[str], list[float]]:
    if not isinstance(row, dict):
        raise RowError(path, i, None, "not_an_object", f"row is {type(row).__name__}")
    instruction = row.get("instruction")
    question = extract_question(instruction) if isinstance(instruction, str) else None
    given = row.get("input")
    if (isinstance(instruction, str) and not _QUESTION_RE.search(instruction)
            and isinstance(given, str) and given.strip()):
        question = extract_question(given)  # Alpaca's layout: the question is the input
    missing = [f for f in ("instruction", "output") if f not in row]
    if missing:
        raise RowError(path, i, question, "missing_field", f"missing {', '.join(missing)}")
    if not isinstance(instruction, str):
        raise RowError(path, i, None, "missing_field", "'instruction' is not a string")
    if not question:
        raise RowError(path, i, question, "empty_question", "the question text is empty")
    output = row["output"]
    if not isinstance(output, str):
        raise RowError(
            path, i, question, "output_not_json",
            f"'output' is {type(output).__name__}, not a JSON string",
        )
    try:
        steps = json.loads(output)
    except json.JSONDecodeError as err:
        raise RowError(
            path, i, question, "output_not_json", f"'output' is not valid JSON ({err.msg})"
        ) from None
    bad = validate_steps(steps)
    if bad is not None:
        raise RowError(path, i, question, *bad)
    return question, [st["step"] for st in steps], [float(st["Q"]) for st in steps]


def read_with_stats(
    path: str | os.PathLike, on_error: str = "skip"
) -> tuple[list[Solution], dict[str, int]]:
    """Read and validate an AlphaMath file: ``(solutions, skipped)`` where ``skipped`` counts
    rejected rows by reason (empty with ``on_error="raise"``, which raises on the first one).

    ``sid = f"{qid}-{k}"`` with k the index of the solution among the kept rows of its
    question, in file order; ``row`` is the 0-based index in the file's JSON list.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    path = str(path)
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start}); an AlphaMath file is UTF-8 "
                        "JSON: re-export it as UTF-8") from None
    except json.JSONDecodeError as err:
        raise DataError(
            f"{path}: not valid JSON ({err.msg} at line {err.lineno}); an AlphaMath file is one "
            "JSON list of rows"
        ) from None
    if not isinstance(data, list):
        raise DataError(
            f"{path}: top level is {type(data).__name__}; an AlphaMath file is a JSON list of "
            "rows {instruction, input, output}"
        )
    solutions: list[Solution] = []
    skipped: Counter[str] = Counter()
    per_question: Counter[str] = Counter()
    errors: list[RowError] = []
    for i, row in enumerate(data):
        try:
            question, steps, q_values = _parse_row(path, i, row)
        except RowError as err:
            errors.append(err)
            skipped[err.reason] += 1
            continue
        qid = question_id(question)
        k = per_question[qid]
        per_question[qid] += 1
        solutions.append(
            Solution(qid, f"{qid}-{k}", question, steps, q_values, q_values[-1] == 1, i)
        )
    if errors and on_error == "raise":
        if len(errors) == 1:
            raise errors[0]
        raise DataError(listed(path, [str(e) for e in errors], len(data), "rows"))
    if not solutions:
        what = (f"all {len(data)} rows were rejected ({dict(sorted(skipped.items()))})"
                if data else "it is an empty list")
        raise DataError(f"{path}: no solution to read: {what}; an AlphaMath file is a JSON "
                         "list of rows {instruction, input, output}")
    return solutions, dict(sorted(skipped.items()))


def read(path: str | os.PathLike, on_error: str = "raise") -> list[Solution]:
    """Read and validate an AlphaMath file. ``on_error="raise"`` stops at the first bad row
    with an error naming the file, the row, the question and the fix; ``"skip"`` drops bad
    rows and warns with their counts by reason (use :func:`read_with_stats` to get them)."""
    solutions, skipped = read_with_stats(path, on_error)
    if skipped:
        warnings.warn(
            f"{path}: skipped {sum(skipped.values())} bad rows: {skipped}", stacklevel=2
        )
    return solutions


def make_instruction(question: str) -> str:
    return f"<question>\n{question}\n</question>"


def write(
    path: str | os.PathLike,
    rows: Sequence[tuple],
) -> None:
    """Write solutions in the AlphaMath format, atomically.

    ``rows``: ``(question, steps, q_values)`` or ``(question, steps, q_values, p_values)``.
    ``p_values`` (the policy prior of each step in MCTS) defaults to 1.0 for every step when
    absent or None, since a sampler without tree search has no prior to report; ``depth`` is
    the 1-based step index. Rows are validated like :func:`read` does (ValueError naming the
    row) before anything is written.
    """
    out = []
    for i, row in enumerate(rows):
        if len(row) not in (3, 4):
            raise ValueError(
                f"write: row {i} has {len(row)} items; give (question, steps, q_values) or "
                "(question, steps, q_values, p_values)"
            )
        question, steps, q_values = row[0], list(row[1]), list(row[2])
        p_values = row[3] if len(row) == 4 and row[3] is not None else [1.0] * len(steps)
        where = f"write: row {i} (question {_short(str(question))!r})"
        if not isinstance(question, str) or not question.strip():
            raise ValueError(f"{where}: the question must be a non-empty string")
        if len(q_values) != len(steps) or len(p_values) != len(steps):
            raise ValueError(
                f"{where}: {len(steps)} steps but {len(q_values)} Q values and "
                f"{len(p_values)} P values; give one of each per step"
            )
        records = [
            {"step": s, "P": float(p), "Q": q, "depth": k + 1}
            for k, (s, p, q) in enumerate(zip(steps, p_values, q_values, strict=True))
        ]
        bad = validate_steps(records)
        if bad is not None:
            raise ValueError(f"{where}: {bad[1]}. Fix: {REASONS[bad[0]]}")
        for r in records:
            r["Q"] = float(r["Q"])
        out.append(
            {
                "instruction": make_instruction(question.strip()),
                "input": "",
                "output": json.dumps(records, ensure_ascii=False),
            }
        )
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(out, fh, ensure_ascii=False, indent=1)
        fh.write("\n")
