"""Answer extraction and equivalence.

* The built-in world: its own exact checker (``pipa.world.extract_answer`` / ``check``).
* GSM8K, MATH, MATH500: the model's final answer is extracted here (last ``\\boxed{}``, else
  ``#### N``, else ``The answer is N``, else a line ``A: N``, else, as ToRA's and MARIO's
  evaluators do, the last number of the output; ``extracted_by`` records which: ``box``,
  ``fallback`` or ``none``). Both sides are normalised the same way first (``normalize_answer``:
  percent signs, degrees, dollar signs, thousands separators, trailing ``\\text{}`` units);
  equivalence is then math-verify's ``parse`` + ``verify`` (no hand-written LaTeX
  equivalence), with math-verify's signal-based timeouts on. A gold may be a list of
  alternatives, any of which is correct (``answers`` of a benchmark row); a set of answers
  (``-2, 1``) is compared order-free by math-verify itself. Signals only work in the main thread of the main interpreter, so
  grading must run there (or in worker *processes*); elsewhere a clear error is raised.

A grader never raises on a model output: no answer, unparsable LaTeX, a timeout or any
exception inside math-verify give ``Verdict(correct=False, malformed=True, reason=...)``.
"""

from __future__ import annotations

import math
import re
import threading
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Protocol

from pipa import registry
from pipa.benchmarks import last_boxed, strip_thousands_commas

WORLD_SETTING = registry.WORLD
REAL_SETTING = registry.REAL

Z95 = 1.959963984540054


@dataclass(frozen=True)
class Verdict:
    extracted: str | None
    correct: bool
    malformed: bool
    reason: str
    extracted_by: str = "none"  # box | fallback | none (real benchmarks; see extract_answer)


class Grader(Protocol):
    def grade(self, gold: str, output: str) -> Verdict: ...


# --------------------------------------------------------------------------- world


class WorldGrader:
    """Exact integer check of the built-in world (DS ``Answer: 137``, QW ``So the answer is``)."""

    def __init__(self) -> None:
        self._world = None

    def _module(self):
        if self._world is None:
            try:
                from pipa import world
            except ImportError as err:  # pragma: no cover - depends on the world module
                raise ImportError(
                    "WorldGrader needs pipa.world (extract_answer, check); it is not importable"
                ) from err
            self._world = world
        return self._world

    def grade(self, gold: str, output: str) -> Verdict:
        world = self._module()
        try:
            extracted = world.extract_answer(output)
        except Exception as err:  # noqa: BLE001 - a checker bug must not crash an eval stage
            return Verdict(None, False, True, f"extractor error: {type(err).__name__}: {err}")
        if extracted is None:
            return Verdict(None, False, True, "no answer")
        correct = bool(world.check(str(gold), output))
        return Verdict(extracted, correct, False, "correct" if correct else "wrong answer")


# --------------------------------------------------------------------------- extraction

_ANSWER_IS = re.compile(r"(?i)\b(?:the\s+)?(?:final\s+)?answer\s+is\s*:?\s*")
_HASH = re.compile(r"####\s*([^\n]*)")
# [ \t], not \s: with \s a run of newlines made every line start rescan the rest (quadratic)
_A_LINE = re.compile(r"(?m)^[ \t]*A:[ \t]*(.+?)[ \t]*$")


def _after_answer_is(rest: str) -> str:
    """The answer following 'the answer is': a $...$ / \\(...\\) span, else up to the sentence end."""
    rest = rest.lstrip()
    for open_, close in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if rest.startswith(open_):
            end = rest.find(close, len(open_))
            if end > 0:
                return rest[len(open_) : end]
    line = rest.split("\n", 1)[0]
    # cut at a sentence end: a period followed by whitespace or end of line
    m = re.search(r"\.(\s|$)", line)
    return line[: m.start()] if m else line


def clean_answer(ans: str) -> str:
    ans = ans.strip()
    for open_, close in (("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if ans.startswith(open_) and ans.endswith(close) and len(ans) >= len(open_) + len(close):
            ans = ans[len(open_) : len(ans) - len(close)].strip()
    return ans.rstrip(".").strip()


FALLBACKS = registry.ANSWER_FALLBACKS
EXTRACTED_BY = ("box", "fallback", "none")
_NUMBER = re.compile(r"-?\d*\.?\d+")


def extract_final_answer(text: str, fallback: str = "none") -> str | None:
    """The model's final answer string, or None when it gives none (``extract_answer``)."""
    return extract_answer(text, fallback)[0]


def extract_answer(text: str, fallback: str = "last_number") -> tuple[str | None, str]:
    """``(answer, extracted_by)``: the model's final answer and how it was found.

    Priority: the last ``\\boxed{}``/``\\fbox{}`` (balanced braces; ``box``), then the last
    ``#### N``, then the last ``The (final) answer is N``, then the last line ``A: N``, then
    with ``fallback="last_number"`` the last number of the text, commas removed (ToRA's and
    MARIO's rule; all ``fallback``); ``(None, "none")`` when nothing is found. Linear in
    the length of the text.
    """
    if fallback not in FALLBACKS:
        raise ValueError(f"answer fallback {fallback!r}; valid: {', '.join(FALLBACKS)}")
    boxed = last_boxed(text)
    if boxed is not None:
        ans = clean_answer(boxed)
        return (ans, "box") if ans else (None, "none")
    ans = _unboxed_answer(text)
    if ans is not None:
        return ans, "fallback"
    if fallback == "last_number":
        numbers = _NUMBER.findall(text.replace(",", ""))
        if numbers:
            return numbers[-1], "fallback"
    return None, "none"


def _unboxed_answer(text: str) -> str | None:
    """``#### N``, else ``The (final) answer is N``, else a line ``A: N`` (the last one)."""
    candidates = []
    hashes = list(_HASH.finditer(text))
    if hashes:
        candidates.append(hashes[-1].group(1))
    else:
        # whichever of "the answer is ..." and a line "A: ..." comes last
        said = list(_ANSWER_IS.finditer(text))
        lines = list(_A_LINE.finditer(text))
        if said and (not lines or said[-1].start() > lines[-1].start()):
            candidates.append(_after_answer_is(text[said[-1].end() :]))
        elif lines:
            candidates.append(lines[-1].group(1))
    for cand in candidates:
        ans = clean_answer(cand)
        if ans:
            return ans
    return None


_UNIT_TEXT = re.compile(r"\\(?:text|mbox|mathrm)\s*\{\s*[A-Za-z][A-Za-z .]*\}\s*$")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°|\\degree")
_THOUSANDS = re.compile(r"^-?\d{1,3}(?:,\d{3})+(?:\.\d+)?$")


def normalize_answer(ans: str) -> str:
    """What both sides go through before math-verify: a percent sign (``%``, ``\\%``),
    degrees (``^\\circ``, ``^{\\circ}``, ``°``), dollar signs (``\\$``), a trailing unit in
    ``\\text{}`` (``0.25\\text{ cm}``) and the thousands separators of a plain number
    (``1{,}000``, ``1,000``) are dropped, as MARIO's and Qwen2.5-Math's normalisers do;
    anything else is left to math-verify. An answer that would become empty is kept."""
    out = ans.replace("{,}", ",").replace("\\!", "")
    while True:
        unit = _UNIT_TEXT.search(out)
        if not unit or not out[: unit.start()].strip():
            break
        out = out[: unit.start()].rstrip().rstrip("\\,").rstrip()
    out = _DEGREES.sub("", out)
    out = out.replace("\\%", "").replace("%", "").replace("\\$", "")
    out = out.strip()
    if _THOUSANDS.match(out):
        out = out.replace(",", "")
    return out or ans.strip()


def _numeric_cleanup(ans: str) -> str:
    """GSM8K-style answers: drop thousands commas and currency signs around a number."""
    ans = strip_thousands_commas(ans)
    ans = re.sub(r"\\?\$\s*(?=[-\d.])", "", ans)
    return ans.strip()


# --------------------------------------------------------------------------- math-verify


def _in_main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


class MathVerifyGrader:
    """GSM8K / MATH grading with math-verify (``parse`` then ``verify``), timeouts on.

    ``numeric=True`` (GSM8K) also removes thousands commas and ``$`` signs before parsing.
    """

    def __init__(
        self, *, numeric: bool = False, fallback: str = "last_number", parsing_timeout: int = 5,
        verify_timeout: int = 5
    ) -> None:
        if parsing_timeout <= 0 or verify_timeout <= 0:
            raise ValueError("math-verify timeouts must be positive (whole seconds)")
        if fallback not in FALLBACKS:
            raise ValueError(f"answer fallback {fallback!r}; valid: {', '.join(FALLBACKS)}")
        self.numeric = numeric
        self.fallback = fallback
        self.parsing_timeout = int(parsing_timeout)
        self.verify_timeout = int(verify_timeout)
        self._gold_cache: dict[str, list] = {}

    @staticmethod
    def _wrap(ans: str) -> str:
        return "\\boxed{" + ans + "}"

    def _parse(self, ans: str) -> list:
        from math_verify import parse

        return parse(self._wrap(ans), parsing_timeout=self.parsing_timeout, raise_on_error=True)

    def _gold(self, gold: str) -> list:
        if gold not in self._gold_cache:
            g = normalize_answer(clean_answer(gold))
            g = _numeric_cleanup(g) if self.numeric else g
            self._gold_cache[gold] = self._parse(g)
        return self._gold_cache[gold]

    def grade(self, gold: str | list[str], output: str) -> Verdict:
        """``gold``: the answer, or a list of alternatives any of which is correct."""
        if not _in_main_thread():
            raise RuntimeError(
                "math-verify's timeouts use signal.alarm, which only works in the main thread; "
                "grade in the main thread or in worker processes, not threads"
            )
        extracted, how = extract_answer(output, self.fallback)
        if extracted is None:
            return Verdict(None, False, True, "no answer", "none")
        golds = [gold] if isinstance(gold, str) else list(gold)
        if not golds:
            raise ValueError("a gold answer list must not be empty")
        first = None
        for g in golds:
            v = self._grade_one(g, extracted)
            if v.correct:
                return replace(v, extracted_by=how)
            first = first or v
        return replace(first, extracted_by=how)

    def _grade_one(self, gold: str, extracted: str) -> Verdict:
        from math_verify import verify
        from math_verify.errors import TimeoutException

        pred_text = normalize_answer(extracted)
        pred_text = _numeric_cleanup(pred_text) if self.numeric else pred_text
        try:
            gold_parsed = self._gold(gold)
        except TimeoutException:
            return Verdict(extracted, False, True, "grader timeout (parsing gold)")
        except Exception as err:  # noqa: BLE001 - any failure is a malformed verdict
            return Verdict(extracted, False, True, f"gold unparsable: {type(err).__name__}")
        if not gold_parsed:
            return Verdict(extracted, False, True, "gold unparsable")
        try:
            pred_parsed = self._parse(pred_text)
        except TimeoutException:
            return Verdict(extracted, False, True, "grader timeout (parsing answer)")
        except Exception as err:  # noqa: BLE001 - any failure is a malformed verdict
            return Verdict(extracted, False, True, f"unparsable answer: {type(err).__name__}")
        if not pred_parsed:
            return Verdict(extracted, False, True, "unparsable answer")
        timed_out = False
        errors = []
        for g in gold_parsed:
            for t in pred_parsed:
                try:
                    if verify(g, t, timeout_seconds=self.verify_timeout, raise_on_error=True):
                        return Verdict(extracted, True, False, "correct")
                except TimeoutException:
                    timed_out = True
                except Exception as err:  # noqa: BLE001 - any failure is a malformed verdict
                    errors.append(type(err).__name__)
        if timed_out:
            return Verdict(extracted, False, True, "grader timeout (verify)")
        if errors and len(errors) == len(gold_parsed) * len(pred_parsed):
            return Verdict(extracted, False, True, f"grader error: {errors[0]}")
        return Verdict(extracted, False, False, "wrong answer")


def get_grader(benchmark: str, *, setting: str | None = None,
               fallback: str = "last_number") -> Grader:
    """The grader of a benchmark.

    ``gsm`` -> world checker; ``gsm8k`` -> math-verify (numeric); ``math500`` -> math-verify.
    ``math`` names both the world's math tier and the MATH benchmark: pass ``setting``
    (``"world"`` or ``"real"``).
    """
    if setting not in (None, WORLD_SETTING, REAL_SETTING):
        raise ValueError(f"setting must be 'world' or 'real', got {setting!r}")
    sources = [setting] if setting else [s for s in registry.BENCHMARKS
                                         if benchmark in registry.BENCHMARKS[s]]
    if len(sources) > 1:
        raise ValueError(f"benchmark {benchmark!r} is ambiguous: pass setting='world' or "
                         "setting='real'")
    if not sources:
        raise ValueError(f"no grader for benchmark {benchmark!r}")
    kind = registry.benchmark(benchmark, sources[0]).grader
    if kind == "world":
        return WorldGrader()
    return MathVerifyGrader(numeric=kind == "numeric", fallback=fallback)


# --------------------------------------------------------------------------- metrics


def wilson_interval(n_correct: int, n: int, z: float = Z95) -> tuple[float, float]:
    """Wilson score interval for a binomial proportion (``(0, 1)`` when n == 0)."""
    if n == 0:
        return (0.0, 1.0)
    p = n_correct / n
    denom = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    lo = 0.0 if n_correct == 0 else max(0.0, centre - half)
    hi = 1.0 if n_correct == n else min(1.0, centre + half)
    return (lo, hi)


def evaluate_predictions(rows: Iterable[dict]) -> dict:
    """``eval/metrics.json`` from prediction rows (each with benchmark, correct, malformed)."""
    counts: dict[str, list[int]] = {}
    how: dict[str, dict[str, int]] = {}
    for row in rows:
        c = counts.setdefault(row["benchmark"], [0, 0, 0])
        c[0] += 1
        c[1] += bool(row["correct"])
        c[2] += bool(row["malformed"])
        if "extracted_by" in row:  # real benchmarks: how each answer was found
            by = how.setdefault(row["benchmark"], dict.fromkeys(EXTRACTED_BY, 0))
            by[row["extracted_by"]] += 1
    out = {}
    for bench in sorted(counts):
        n, k, bad = counts[bench]
        lo, hi = wilson_interval(k, n)
        out[bench] = {
            "accuracy": k / n,
            "n": n,
            "n_correct": k,
            "ci95": [lo, hi],
            "n_malformed": bad,
        }
        if bench in how:
            out[bench]["extracted_by"] = how[bench]
    return {"benchmarks": out}


def grade_predictions(
    problems: list[dict], outputs: list[str], *, setting: str | None = None,
    fallback: str = "last_number"
) -> list[dict]:
    """Prediction rows (``eval/predictions.jsonl`` schema plus ``reason``), sorted.

    A problem's gold is its ``answers`` (alternatives, any correct) when it has them, else
    its ``answer``. Rows of real benchmarks also say how the answer was found
    (``extracted_by``); the world's rows, graded by its exact checker, do not."""
    if len(problems) != len(outputs):
        raise ValueError(f"{len(problems)} problems but {len(outputs)} outputs")
    graders: dict[str, Grader] = {}
    rows = []
    for prob, out in zip(problems, outputs):
        bench = prob["benchmark"]
        if bench not in graders:
            graders[bench] = get_grader(bench, setting=setting, fallback=fallback)
        grader = graders[bench]
        gold = prob.get("answers") or str(prob["answer"])
        v = grader.grade(gold, out)
        row = {
            "benchmark": bench,
            "id": prob["id"],
            "output": out,
            "extracted": v.extracted,
            "correct": v.correct,
            "malformed": v.malformed,
            "reason": v.reason,
        }
        if isinstance(grader, MathVerifyGrader):
            row["extracted_by"] = v.extracted_by
        rows.append(row)
    return sorted(rows, key=lambda r: (r["benchmark"], r["id"]))
