"""Benchmark loaders: one schema, gold answers, clear errors, and gold self-grading."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import pytest
import yaml

from pipa.benchmarks import (
    BENCHMARK_DATA,
    GSM8K_TEST,
    MATH500_TEST,
    MATH_CORRECTIONS,
    MATH_TEST,
    boxed_contents,
    gsm8k_final_answer,
    last_boxed,
    load_benchmark,
    load_corrections,
    load_gsm8k,
    load_math,
    load_math500,
    load_world_tier,
    math500_answer_mismatches,
    math_gold,
    strip_thousands_commas,
)
from pipa.grading import MathVerifyGrader

ROOT = Path(__file__).resolve().parents[1]
SCHEMA = {"id", "question", "answer", "benchmark"}


def test_benchmark_data_constant_points_inside_repo():
    assert BENCHMARK_DATA == ROOT / "data" / "benchmarks"
    for path in (GSM8K_TEST, MATH_TEST, MATH500_TEST):
        assert path.is_file() and path.is_relative_to(ROOT)


def test_params_read_the_repository_copy():
    for params in (ROOT / "params.yaml", ROOT / "params" / "real.yaml"):
        bench = yaml.safe_load(params.read_text())["data"]["benchmark_dir"]
        assert not Path(bench).is_absolute() and (ROOT / bench).resolve() == BENCHMARK_DATA


def test_benchmark_files_match_the_checksums_in_their_readme():
    """The copies are byte-identical to the published files the README lists."""
    listed = dict(
        re.findall(r"^\| `([\w./-]+)` \|.*\| `([0-9a-f]{64})` \|$",
                   (BENCHMARK_DATA / "README.md").read_text(), re.MULTILINE)
    )
    data_files = {
        p.relative_to(BENCHMARK_DATA).as_posix()
        for p in BENCHMARK_DATA.rglob("*")
        if p.is_file() and p.name not in ("README.md", "NOTICE")
    }
    assert set(listed) == data_files
    for rel, digest in listed.items():
        assert hashlib.sha256((BENCHMARK_DATA / rel).read_bytes()).hexdigest() == digest, rel


@pytest.mark.parametrize(
    "text, expected",
    [
        ("a \\boxed{1} b \\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),
        ("\\boxed{\\{1,2\\}}", "\\{1,2\\}"),
        ("\\boxed{a^{2}+\\sqrt{b_{1}}}.", "a^{2}+\\sqrt{b_{1}}"),
        ("\\fbox{x} then \\boxed{y}", "y"),
        ("\\boxed{y} then \\fbox{x}", "x"),
        ("$\\boxed 3$", "3"),
        ("\\boxed{unclosed", None),
        ("nothing", None),
        ("\\boxedfoo{1}", None),
    ],
)
def test_last_boxed(text, expected):
    assert last_boxed(text) == expected


def test_boxed_contents_order():
    assert boxed_contents("\\fbox{1} \\boxed{2} \\fbox{3}") == ["1", "2", "3"]


def test_gsm8k_answer_and_commas():
    assert gsm8k_final_answer("blah <<2*3=6>>6\n#### 1,234") == "1234"
    assert gsm8k_final_answer("#### -5") == "-5"
    assert strip_thousands_commas("1,234,567 and 1,2") == "1234567 and 1,2"
    with pytest.raises(ValueError, match="####"):
        gsm8k_final_answer("no marker")


def test_missing_file_is_clear(tmp_path):
    missing = tmp_path / "nope" / "test.jsonl"
    for loader in (load_gsm8k, load_math, load_math500):
        with pytest.raises(FileNotFoundError, match="nope") as info:
            loader(missing)
        assert "README" in str(info.value)


def test_small_files(tmp_path):
    g = tmp_path / "g.jsonl"
    g.write_text(json.dumps({"question": "q?", "answer": "x\n#### 70,000"}) + "\n")
    assert load_gsm8k(g) == [
        {"id": "gsm8k-0000", "question": "q?", "answer": "70000", "benchmark": "gsm8k"}
    ]
    m = tmp_path / "m.jsonl"
    m.write_text(
        json.dumps({"problem": "p", "solution": "so \\boxed{\\frac{1}{2}}.", "idx": 7}) + "\n"
    )
    assert load_math(m)[0] == {
        "id": "math-0007",
        "question": "p",
        "answer": "\\frac{1}{2}",
        "benchmark": "math",
    }
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"problem": "p", "solution": "no box"}) + "\n")
    with pytest.raises(ValueError, match="boxed"):
        load_math(bad)


def test_world_tier():
    problems = [
        {"id": "w-2", "tier": "gsm", "question": "Max 3 +4 ?", "answer": "7", "steps": []},
        {"id": "w-1", "tier": "gsm", "question": "Ann 2 *3 ?", "answer": "6", "steps": []},
    ]
    rows = load_world_tier(problems)
    assert [r["id"] for r in rows] == ["w-1", "w-2"]
    assert all(set(r) == SCHEMA and r["benchmark"] == "gsm" for r in rows)
    assert load_world_tier(problems, benchmark="math")[0]["benchmark"] == "math"


def test_real_loaders_schema_and_sizes():
    for name, n in (("gsm8k", 1319), ("math", 5000), ("math500", 500)):
        rows = load_benchmark(name)
        assert len(rows) == n
        # a corrected MATH gold also lists its alternatives (``answers``)
        assert all(set(r) - {"answers"} == SCHEMA and r["benchmark"] == name for r in rows)
        assert len({r["id"] for r in rows}) == n
        assert all(r["answer"] for r in rows)
    assert load_gsm8k(GSM8K_TEST)[2]["answer"] == "70000"
    assert load_math(MATH_TEST)[2]["answer"] == "\\dfrac{9}{7}"
    assert load_math500(MATH500_TEST)[0]["id"] == "test/precalculus/807.json"


def test_math500_answer_field_matches_last_box():
    assert math500_answer_mismatches(MATH500_TEST) == []


def _self_grade(loader, path, field, numeric, limit=None):
    from pipa.io import read_jsonl

    problems = loader(path)[:limit]
    raw = read_jsonl(path)[:limit]
    g = MathVerifyGrader(numeric=numeric)
    failed = []
    for p, r in zip(problems, raw):
        # MATH: the solution's answer as the loader's rule reads its boxes (a set boxed side
        # by side is one answer), graded against the corrected gold
        text = "\\boxed{" + math_gold(r[field]) + "}" if loader is load_math else r[field]
        if not g.grade(p.get("answers") or p["answer"], text).correct:
            failed.append(p["id"])
    return failed


# Corrected MATH golds that the solution's own boxes cannot give (an answer set boxed across
# a derivation, alternatives boxed side by side, an intermediate boxed last): the rest of
# the correction table, and every other gold, grades its own solution correct.
NOT_IN_THE_SOLUTION = {"math-2152", "math-2656", "math-2716", "math-2912", "math-4060",
                       "math-4562"}


@pytest.mark.parametrize(
    "loader, path, field, numeric",
    [
        (load_gsm8k, GSM8K_TEST, "answer", True),
        (load_math, MATH_TEST, "solution", False),
        (load_math500, MATH500_TEST, "solution", False),
    ],
)
def test_gold_self_grading_slice(loader, path, field, numeric):
    assert _self_grade(loader, path, field, numeric, limit=40) == []


@pytest.mark.slow
@pytest.mark.parametrize(
    "loader, path, field, numeric",
    [
        (load_gsm8k, GSM8K_TEST, "answer", True),
        (load_math, MATH_TEST, "solution", False),
        (load_math500, MATH500_TEST, "solution", False),
    ],
)
def test_gold_self_grading_full(loader, path, field, numeric):
    failed = set(_self_grade(loader, path, field, numeric))
    if loader is load_math:
        assert failed == NOT_IN_THE_SOLUTION
        assert failed <= set(load_corrections(MATH_CORRECTIONS))
    else:
        assert failed == set()


def test_gsm8k_bad_records_are_all_named_with_the_file(tmp_path):
    from pipa.benchmarks import load_gsm8k
    from pipa.io import DataError

    path = tmp_path / "test.jsonl"
    rows = [{"question": "q1", "answer": "x\n#### 3"}, {"question": "q2", "answer": "no mark"},
            {"answer": "#### 4"}, {"question": "q4", "answer": "y\n#### 5"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError) as err:
        load_gsm8k(path)
    message = str(err.value)
    assert message.startswith(f"{path}: 2 bad records of 4")
    assert "record 2: the answer has no '#### <number>' line" in message
    assert "record 3 lacks field(s) ['question']" in message
