"""Grading: extraction edge cases, math-verify equivalence, timeouts, metrics, agreement stage."""

from __future__ import annotations

import json
import math
import sys
import time
import types
from pathlib import Path

import pytest

from pipa import grading
from pipa.benchmarks import BENCHMARK_DATA
from pipa.grading import (
    MathVerifyGrader,
    Verdict,
    WorldGrader,
    evaluate_predictions,
    extract_final_answer,
    get_grader,
    grade_predictions,
    wilson_interval,
)

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mv():
    return MathVerifyGrader()


@pytest.fixture(scope="module")
def mv_gsm():
    return MathVerifyGrader(numeric=True)


# ------------------------------------------------------------------ extraction


@pytest.mark.parametrize(
    "text, expected",
    [
        ("so $\\boxed{\\frac{1}{2}}$.", "\\frac{1}{2}"),
        ("first \\boxed{1} then \\boxed{\\{1, 2\\}}", "\\{1, 2\\}"),
        ("\\boxed{\\frac{\\sqrt{3}}{\\left(2\\right)}}", "\\frac{\\sqrt{3}}{\\left(2\\right)}"),
        ("\\fbox{7}", "7"),
        ("the value is \\boxed 5$ ok", "5"),
        ("He has 3 apples.\n#### 1,234", "1,234"),
        ("So the final answer is $\\frac{3}{4}$. I hope it is correct.", "\\frac{3}{4}"),
        ("The answer is 42.", "42"),
        ("blah\nA: 18", "18"),
        ("The answer is 3 apples.\nA: 4", "4"),
        ("A: 4\nso the answer is 5.", "5"),
        ("A: 3.5\n", "3.5"),
        ("no answer here", None),
        ("truncated \\boxed{\\frac{1}{2}", None),
        ("", None),
    ],
)
def test_extract_final_answer(text, expected):
    assert extract_final_answer(text) == expected


# ------------------------------------------------------------------ equivalence


@pytest.mark.parametrize(
    "gold, output, correct",
    [
        ("\\frac{1}{2}", "so \\boxed{0.5}", True),
        ("0.5", "\\boxed{\\frac{1}{2}}", True),
        ("\\dfrac{9}{7}", "\\boxed{\\frac{9}{7}}", True),
        ("10", "\\boxed{10\\text{ cm}}", True),
        ("10", "\\boxed{10 \\text{ inches}}", True),
        ("10{,}000", "\\boxed{10000}", True),
        ("\\left( 3, \\frac{\\pi}{2} \\right)", "\\boxed{(3, \\pi/2)}", True),
        ("p - q", "\\boxed{-q + p}", True),
        ("\\frac{1}{2}", "\\boxed{\\frac{1}{3}}", False),
        ("3", "\\boxed{x = 3}", True),
    ],
)
def test_math_verify_equivalence(mv, gold, output, correct):
    v = mv.grade(gold, output)
    assert v.correct is correct, v
    assert not v.malformed


@pytest.mark.parametrize(
    "gold, output, correct",
    [
        ("70000", "so he made $70,000\n#### 70,000", True),
        ("70000", "A: $70,000", True),
        ("1234567", "#### 1,234,567", True),
        ("18", "A: 18.00", True),
        ("18", "The answer is 18.", True),
        ("18", "A: 19", False),
        ("5", "A: -5", False),
    ],
)
def test_gsm8k_numbers(mv_gsm, gold, output, correct):
    assert mv_gsm.grade(gold, output).correct is correct


def test_no_answer_is_malformed(mv):
    v = mv.grade("5", "I am not sure.")
    assert v == Verdict(None, False, True, "no answer")


def test_unparsable_is_malformed_not_crash(mv):
    v = mv.grade("5", "\\boxed{\\frac{}{}{\\left(}")
    assert v.correct is False
    assert isinstance(v.reason, str)


def test_parse_timeout_is_malformed(mv, monkeypatch):
    from math_verify.errors import TimeoutException

    def hang(*a, **k):
        raise TimeoutException("Operation timed out!")

    monkeypatch.setattr("math_verify.parse", hang)
    g = MathVerifyGrader()
    v = g.grade("5", "\\boxed{5}")
    assert v.malformed and not v.correct and "timeout" in v.reason


def test_verify_exception_is_malformed(monkeypatch):
    def boom(*a, **k):
        raise RuntimeError("sympy exploded")

    monkeypatch.setattr("math_verify.verify", boom)
    v = MathVerifyGrader().grade("5", "\\boxed{5}")
    assert v.malformed and not v.correct and "RuntimeError" in v.reason


def test_real_signal_timeout_interrupts_a_hang(monkeypatch):
    """math-verify's own signal timeout stops a slow comparison; we report it as malformed."""
    import sympy

    def slow_eq(*a, **k):
        time.sleep(5)
        return True

    monkeypatch.setattr("math_verify.grader.sympy_expr_eq", slow_eq)
    g = MathVerifyGrader(verify_timeout=1)
    t0 = time.perf_counter()
    v = g.grade("5", "\\boxed{5.0}")  # string forms differ: only sympy could say equal
    assert time.perf_counter() - t0 < 4
    assert v.malformed and not v.correct and "timeout" in v.reason
    assert sympy  # imported so sympy's import time is not inside the timed section


def test_grading_in_thread_raises_clear_error():
    import threading

    errors = []

    def work():
        try:
            MathVerifyGrader().grade("5", "\\boxed{5}")
        except RuntimeError as err:
            errors.append(str(err))

    t = threading.Thread(target=work)
    t.start()
    t.join()
    assert errors and "main thread" in errors[0]


# ------------------------------------------------------------------ world grader


def _fake_world():
    import re

    mod = types.ModuleType("pipa.world")

    def extract_answer(text):
        m = re.search(r"^(?:Answer: (-?\d+)|So the answer is (-?\d+)\.?)$", text, re.MULTILINE)
        return None if m is None else str(int(m.group(1) or m.group(2)))

    mod.extract_answer = extract_answer
    mod.check = lambda gold, text: extract_answer(text) == str(int(gold))
    return mod


@pytest.fixture
def world_grader(monkeypatch):
    try:
        from pipa import world

        assert hasattr(world, "extract_answer") and hasattr(world, "check")
    except (ImportError, AssertionError):
        monkeypatch.setitem(sys.modules, "pipa.world", _fake_world())
    return WorldGrader()


def test_world_grader(world_grader):
    assert world_grader.grade("137", "1+2=3\nAnswer: 137\n").correct
    assert world_grader.grade("137", "3 plus 4 is 7.\nSo the answer is 137.\n").correct
    v = world_grader.grade("137", "Answer: 138\n")
    assert not v.correct and not v.malformed and v.extracted == "138"
    v = world_grader.grade("137", "1+2=3\n")
    assert v.malformed and not v.correct


def test_get_grader():
    assert isinstance(get_grader("gsm"), WorldGrader)
    assert isinstance(get_grader("math", setting="world"), WorldGrader)
    assert isinstance(get_grader("math", setting="real"), MathVerifyGrader)
    assert get_grader("gsm8k").numeric
    assert isinstance(get_grader("math500"), MathVerifyGrader)
    with pytest.raises(ValueError, match="ambiguous"):
        get_grader("math")
    with pytest.raises(ValueError):
        get_grader("nope")


# ------------------------------------------------------------------ metrics


def test_wilson_hand_numbers():
    # 45/100: p=.45, z=1.96 -> (0.3561, 0.5475) by hand
    lo, hi = wilson_interval(45, 100)
    assert lo == pytest.approx(0.35615, abs=1e-4)
    assert hi == pytest.approx(0.54749, abs=1e-4)
    lo, hi = wilson_interval(0, 10)
    assert lo == 0.0 and hi == pytest.approx(0.27753, abs=1e-4)
    lo, hi = wilson_interval(10, 10)
    assert hi == 1.0 and lo == pytest.approx(0.72247, abs=1e-4)
    assert wilson_interval(0, 0) == (0.0, 1.0)


def test_evaluate_predictions_schema():
    rows = [
        {"benchmark": "gsm", "correct": True, "malformed": False},
        {"benchmark": "gsm", "correct": False, "malformed": True},
        {"benchmark": "gsm", "correct": False, "malformed": False},
        {"benchmark": "math", "correct": True, "malformed": False},
    ]
    m = evaluate_predictions(rows)
    assert set(m) == {"benchmarks"}
    g = m["benchmarks"]["gsm"]
    assert set(g) == {"accuracy", "n", "n_correct", "ci95", "n_malformed"}
    assert g["n"] == 3 and g["n_correct"] == 1 and g["n_malformed"] == 1
    assert g["accuracy"] == pytest.approx(1 / 3)
    assert g["ci95"][0] < 1 / 3 < g["ci95"][1]
    json.dumps(m)
    assert math.isclose(m["benchmarks"]["math"]["accuracy"], 1.0)


def test_grade_predictions_rows(world_grader):
    problems = [
        {"id": "b", "benchmark": "gsm8k", "answer": "12", "question": "?"},
        {"id": "a", "benchmark": "gsm8k", "answer": "3", "question": "?"},
        {"id": "c", "benchmark": "gsm", "answer": "7", "question": "?"},
    ]
    rows = grade_predictions(problems, ["#### 12", "nothing", "Answer: 7\n"])
    assert [(r["benchmark"], r["id"]) for r in rows] == [
        ("gsm", "c"),
        ("gsm8k", "a"),
        ("gsm8k", "b"),
    ]
    assert [r["correct"] for r in rows] == [True, False, True]
    assert rows[1]["malformed"] and rows[1]["extracted"] is None
    m = evaluate_predictions(rows)
    assert m["benchmarks"]["gsm8k"]["n_malformed"] == 1


# ------------------------------------------------------------------ gold self-grading + stage


def _load_stage():
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "grader_agreement", ROOT / "stages" / "grader_agreement.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_gold_self_grading_slice():
    sg, failures = _load_stage().self_grade(BENCHMARK_DATA, limit=60)
    assert failures == []
    assert all(v["correct_pct"] == 100.0 and v["n"] == 60 for v in sg.values())


def test_agreement_stage_on_slice(tmp_path):
    stage = _load_stage()
    m = stage.run(BENCHMARK_DATA, tmp_path / "a.json", tmp_path / "d.md", limit=15)
    saved = json.loads((tmp_path / "a.json").read_text())
    assert saved["gsm8k_gpt3"]["n"] == 60 and saved["qwen25_math"]["n"] == 120
    assert m["gsm8k_gpt3"]["agreement_pct"] >= 99.0
    assert m["qwen25_math"]["agreement_pct"] >= 99.0
    assert "# Grader agreement" in (tmp_path / "d.md").read_text()


@pytest.mark.slow
def test_agreement_full_run(tmp_path):
    m = _load_stage().run(BENCHMARK_DATA, tmp_path / "a.json", tmp_path / "d.md")
    assert m["gsm8k_gpt3"]["agreement_pct"] >= 99.0
    assert m["qwen25_math"]["agreement_pct"] >= 99.0
    assert all(v["correct_pct"] == 100.0 for v in m["self_grading"].values())


def test_module_has_no_hand_written_equivalence():
    src = Path(grading.__file__).read_text()
    assert "math_verify" in src and "verify(" in src
