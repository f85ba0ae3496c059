import json
import math
import random
from pathlib import Path

import pytest

from pipa import alphamath, solver, world

FIXTURE = Path(__file__).parent / "fixtures" / "alphamath_sample.json"


def test_fixture_quirks_parsed():
    sols = alphamath.read(FIXTURE)
    assert len(sols) == 8
    assert [s.row for s in sols] == list(range(8))
    q1 = sols[0]
    assert q1.question == "What is 2+2?"  # tags, newlines and spaces stripped
    assert q1.qid == alphamath.question_id("What is 2+2?") and len(q1.qid) == 12
    by_q = {}
    for s in sols:
        by_q.setdefault(s.qid, []).append(s)
    assert len(by_q) == 3
    # several rows per question, sid numbered in file order (row 7 comes back to question 1)
    assert [s.sid for s in by_q[q1.qid]] == [f"{q1.qid}-{k}" for k in range(4)]
    assert [s.row for s in by_q[q1.qid]] == [0, 1, 2, 7]
    assert [s.correct for s in sols] == [True, False, True, True, False, False, False, False]
    assert sols[0].q_values == [0.73, 1.0] and sols[1].q_values == [-0.2, -1.0]
    assert sols[2].q_values == [1.0]  # an integer Q of 1 is accepted
    assert sols[0].steps[0].startswith("<step>\n<p>\n") and "<code>" in sols[0].steps[0]
    assert sols[0].steps[-1] == "<step>\n<p>\nFinal Answer: $\\boxed{4}$\n</p>\n</step>"
    assert sols[0].text == "".join(sols[0].steps)  # no separator added
    assert sols[6].question == "Compute $\\dbinom{8}{4}$."


def test_round_trip_with_world(tmp_path):
    probs = world.generate_problems(5, "gsm", seed=0)
    rng = random.Random(0)
    rows = []
    for p in probs:
        steps, ok = solver.solve(p, "ds", {"borrow": 0.5, "carry": 0.5}, rng)
        qs = [round(rng.uniform(-1, 1), 3) for _ in steps[:-1]] + [1.0 if ok else -1.0]
        rows.append((p["question"], steps, qs))
    n = len(probs[0]["steps"])
    p_vals = [0.1 * (k + 1) for k in range(n)]
    rows.append((probs[0]["question"], probs[0]["steps"], [0.5] * (n - 1) + [1], p_vals))
    path = tmp_path / "out" / "am.json"
    alphamath.write(path, rows)
    sols = alphamath.read(path)
    assert [(s.question, s.steps, s.q_values) for s in sols] == [
        (q, list(st), [float(x) for x in qs]) for q, st, qs, *_ in rows
    ]
    assert sols[-1].sid == f"{sols[0].qid}-1"
    raw = json.loads(path.read_text())
    steps0 = json.loads(raw[0]["output"])
    assert [st["depth"] for st in steps0] == list(range(1, len(steps0) + 1))
    assert all(st["P"] == 1.0 for st in steps0)  # no P given -> 1.0
    assert [st["P"] for st in json.loads(raw[-1]["output"])] == p_vals
    assert raw[0]["input"] == "" and raw[0]["instruction"].startswith("<question>")
    assert [p["question"] for p in probs] == [s.question for s in sols[:5]]
    for p, s in zip(probs, sols, strict=False):
        assert s.correct == world.check(p["answer"], s.text)


def test_round_trip_fixture(tmp_path):
    sols = alphamath.read(FIXTURE)
    path = tmp_path / "again.json"
    alphamath.write(path, [(s.question, s.steps, s.q_values) for s in sols])
    again = alphamath.read(path)
    assert [(s.qid, s.sid, s.steps, s.q_values, s.correct) for s in again] == [
        (s.qid, s.sid, s.steps, s.q_values, s.correct) for s in sols
    ]


def test_write_rejects_bad_rows_and_leaves_nothing(tmp_path):
    path = tmp_path / "bad.json"
    with pytest.raises(ValueError, match="row 0"):
        alphamath.write(path, [("q", ["a\n", "b\n"], [0.5])])
    with pytest.raises(ValueError, match="exactly 1 or -1"):
        alphamath.write(path, [("q", ["a\n"], [0.5])])
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        alphamath.write(path, [("q", ["a\n", "b\n"], [1.5, 1])])
    with pytest.raises(ValueError, match="non-empty"):
        alphamath.write(path, [("  ", ["a\n"], [1])])
    assert not path.exists()


def _step(text="<step>\n<p>\nx\n</p>\n</step>", q=1.0):
    return {"step": text, "P": 0.5, "Q": q, "depth": 1}


def _row(steps, instruction="<question>\nWhat is 1+1?\n</question>"):
    return {"instruction": instruction, "input": "", "output": json.dumps(steps)}


GOOD = _row([_step(q=0.3), _step(q=1)])

BAD_ROWS = {
    "missing_field": {"instruction": "<question>What is 1+1?</question>", "input": ""},
    "output_not_json": dict(GOOD, output="[{'step': 'x'"),
    "output_not_list": dict(GOOD, output=json.dumps({"step": "x", "Q": 1})),
    "empty_steps": _row([]),
    "bad_step": _row([{"Q": 1}]),
    "q_out_of_range": _row([_step(q=1.5), _step(q=1)]),
    "last_q_not_pm1": _row([_step(q=0.3), _step(q=0.99)]),
    "empty_question": _row([_step()], instruction="<question>  \n </question>"),
    "not_an_object": ["not", "a", "row"],
}


@pytest.mark.parametrize("reason", sorted(BAD_ROWS))
def test_each_bad_row_raises_naming_file_row_question(tmp_path, reason):
    path = tmp_path / "data.json"
    path.write_text(json.dumps([GOOD, GOOD, BAD_ROWS[reason], GOOD]))
    with pytest.raises(ValueError) as err:
        alphamath.read(path)
    msg = str(err.value)
    assert str(path) in msg and "row 2" in msg and "Fix:" in msg
    assert err.value.reason == reason
    if reason not in ("not_an_object", "empty_question"):
        assert "What is 1+1?" in msg
    sols, skipped = alphamath.read_with_stats(path, on_error="skip")
    assert [s.row for s in sols] == [0, 1, 3] and skipped == {reason: 1}


def test_nan_and_missing_q_and_non_string_step(tmp_path):
    path = tmp_path / "nan.json"
    path.write_text(json.dumps([_row([_step(q=float("nan")), _step(q=1)])]))
    assert math.isnan(json.loads(json.loads(path.read_text())[0]["output"])[0]["Q"])
    with pytest.raises(ValueError, match="outside"):
        alphamath.read(path)
    path.write_text(json.dumps([_row([{"step": "x"}])]))
    with pytest.raises(ValueError, match="lacks 'Q'"):
        alphamath.read(path)
    path.write_text(json.dumps([_row([{"step": 3, "Q": 1}])]))
    with pytest.raises(ValueError, match="not a string"):
        alphamath.read(path)
    path.write_text(json.dumps([_row([{"step": "x", "Q": True}])]))
    with pytest.raises(ValueError, match="not a number"):
        alphamath.read(path)


def test_skip_counts_and_warns(tmp_path):
    path = tmp_path / "mixed.json"
    path.write_text(json.dumps([GOOD, BAD_ROWS["empty_steps"], BAD_ROWS["empty_steps"],
                                BAD_ROWS["last_q_not_pm1"], GOOD]))
    sols, skipped = alphamath.read_with_stats(path)
    assert len(sols) == 2 and skipped == {"empty_steps": 2, "last_q_not_pm1": 1}
    assert [s.sid[-2:] for s in sols] == ["-0", "-1"]
    with pytest.warns(UserWarning, match="skipped 3 bad rows"):
        assert len(alphamath.read(path, on_error="skip")) == 2
    with pytest.raises(ValueError, match="on_error"):
        alphamath.read(path, on_error="ignore")


def test_bad_files(tmp_path):
    path = tmp_path / "x.json"
    path.write_text('{"instruction": 1}')
    with pytest.raises(ValueError, match="JSON list"):
        alphamath.read(path)
    path.write_text("[{")
    with pytest.raises(ValueError, match="not valid JSON"):
        alphamath.read(path)


def test_question_extraction():
    assert alphamath.extract_question("<question>\n  What is 2+2? \n</question>") == "What is 2+2?"
    assert alphamath.extract_question("Solve: <question>x</question> now") == "x"
    assert alphamath.extract_question("  no tags ") == "no tags"
    assert alphamath.question_id(" a ") == alphamath.question_id("a")


def _plain_row(question: str, q_last: float = 1.0, instruction: str | None = None, inp: str = "") -> dict:
    steps = [{"step": "x = 1\n", "Q": 0.5}, {"step": "Answer: 1\n", "Q": q_last}]
    return {"instruction": instruction if instruction is not None
            else f"<question>{question}</question>", "input": inp, "output": json.dumps(steps)}


def test_alpaca_layout_reads_the_question_from_input(tmp_path):
    """A generic instruction with the question in `input` (Alpaca's layout) must not
    collapse every row into one question."""
    path = tmp_path / "alpaca.json"
    rows = [_plain_row("", instruction="Solve the problem.", inp=q) for q in ("1+0?", "2-1?", "3-2?")]
    path.write_text(json.dumps(rows))
    sols = alphamath.read(path)
    assert [s.question for s in sols] == ["1+0?", "2-1?", "3-2?"]
    assert len({s.qid for s in sols}) == 3


def test_every_bad_row_is_reported_in_one_message(tmp_path):
    path = tmp_path / "bad.json"
    rows = [_plain_row("ok?"), _plain_row("q1?", q_last=0.3), {"instruction": "<question>q2?</question>"},
            _plain_row("q3?", q_last=7.0), _plain_row("fine?")]
    path.write_text(json.dumps(rows))
    with pytest.raises(ValueError) as err:
        alphamath.read(path)
    text = str(err.value)
    assert text.startswith(f"{path}: 3 bad rows of 5:")
    for row, question, fix in ((1, "q1?", "set the last step's Q to exactly 1"),
                               (2, "q2?", "give the row an 'instruction'"),
                               (3, "q3?", "keep every Q a finite number in [-1, 1]")):
        assert f"row {row} (question '{question}')" in text and fix in text
    sols, skipped = alphamath.read_with_stats(path, on_error="skip")
    assert len(sols) == 2 and sum(skipped.values()) == 3


def test_a_file_with_no_solution_is_an_error_naming_it(tmp_path):
    empty = tmp_path / "empty.json"
    empty.write_text("[]")
    with pytest.raises(ValueError, match=r"empty\.json: no solution to read: it is an empty"):
        alphamath.read(empty)
    rejected = tmp_path / "rejected.json"
    rejected.write_text(json.dumps([_plain_row("q?", q_last=0.2)]))
    with pytest.raises(ValueError, match=r"all 1 rows were rejected \(\{'last_q_not_pm1': 1\}"):
        alphamath.read_with_stats(rejected, on_error="skip")
