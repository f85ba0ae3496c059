import random

import pytest

from pipa import solver, world

SMALL = {"gsm": {"train": 60, "val": 20, "test": 30}, "math": {"train": 60, "val": 20, "test": 30}}
ALL_ERRORS = {"borrow": 1.0, "carry": 1.0, "mul_carry": 1.0, "copy": 0.0, "slip": 0.0}


@pytest.fixture(scope="module")
def splits():
    return world.make_splits({"sizes": SMALL}, seed=3)


def _problem(question: str) -> dict:
    return world.make_problem("gsm-train-00000", "gsm", "train", question)


# ---------------------------------------------------------------- problems and splits


def test_splits_sizes_ids_and_schema(splits):
    assert {k: len(v) for k, v in splits.items()} == {"train": 120, "val": 40, "test": 60}
    for split, probs in splits.items():
        for p in probs:
            assert set(p) == {"id", "tier", "split", "question", "answer", "steps"}
            assert p["split"] == split
            assert p["id"].startswith(f"{p['tier']}-{split}-")
            assert all(s.endswith("\n") for s in p["steps"])
            assert p["steps"][-1] == f"Answer: {p['answer']}\n"
            assert world.check(p["answer"], "".join(p["steps"]))
    gsm_test = [p for p in splits["test"] if p["tier"] == "gsm"]
    assert gsm_test[29]["id"] == "gsm-test-00029"


def test_splits_are_disjoint_by_question_and_numbers(splits):
    questions = [p["question"] for ps in splits.values() for p in ps]
    sigs = [world.signature(q) for q in questions]
    assert len(set(questions)) == len(questions)
    assert len(set(sigs)) == len(sigs)


def test_splits_deterministic_and_seed_dependent(splits):
    again = world.make_splits({"sizes": SMALL}, seed=3)
    other = world.make_splits({"sizes": SMALL}, seed=4)
    assert again == splits
    assert [p["question"] for p in other["test"]] != [p["question"] for p in splits["test"]]


def test_test_split_does_not_depend_on_train_size(splits):
    bigger = {t: dict(v, train=v["train"] * 2) for t, v in SMALL.items()}
    assert world.make_splits(bigger, seed=3)["test"] == splits["test"]


def test_tier_shapes_and_bounds(splits):
    cfg = world.DEFAULT_WORLD_CFG["tiers"]
    for p in splits["train"]:
        start, ops = world.parse_question(p["question"])
        lo, hi = cfg[p["tier"]]["n_ops"]
        assert lo <= len(ops) <= hi
        assert {op for op, _ in ops} <= set(cfg[p["tier"]]["ops"])
        values = world.gold_values(start, ops)
        assert all(1 <= v < cfg[p["tier"]]["max_value"] for v in values)
        for (op, b), a in zip(ops, values, strict=False):
            if op == "/":
                assert a % b == 0
    assert any(op == "/" for p in splits["train"] if p["tier"] == "math"
               for op, _ in world.parse_question(p["question"])[1])


def test_bad_cfg_is_rejected():
    with pytest.raises(ValueError, match="n_ops"):
        world.make_splits({"sizes": SMALL, "tiers": {"gsm": {"n_ops": [3, 2]}}}, 0)
    with pytest.raises(ValueError, match="split"):
        world.make_splits({"gsm": {"dev": 3}}, 0)
    with pytest.raises(ValueError, match="widen"):
        world.generate_problems(50, "gsm", 0, tier_cfg={
            "n_ops": [1, 1], "ops": ["+"], "start": [2, 3], "add": [2, 3], "sub": [2, 3],
            "mul": [2, 3], "div": [2, 3], "max_value": 100})


# ---------------------------------------------------------------- text, checker


def test_render_both_styles():
    ops, values = [("*", 3), ("-", 8), ("+", 85), ("/", 1)], [20, 60, 52, 137, 137]
    assert world.render_steps(ops[:3], values[:4], "ds") == [
        "20*3=60\n", "60-8=52\n", "52+85=137\n", "Answer: 137\n"]
    qw = world.render_steps(ops, values, "qw")
    assert qw[0] == "20*3=60 (multiply)\n" and qw[3] == "137/1=137 (divide)\n"
    assert qw[-1] == "So the answer is 137.\n"
    with pytest.raises(ValueError):
        world.render_steps(ops, values[:2], "ds")


def test_parse_question_and_prompt():
    assert world.parse_question("Max 20 toys *3 -8 +85 ?") == (20, [("*", 3), ("-", 8), ("+", 85)])
    assert world.format_prompt("Max 20 toys *3 ?") == "Q: Max 20 toys *3 ?\nA:\n"
    with pytest.raises(ValueError):
        world.parse_question("no numbers here")


@pytest.mark.parametrize(
    "text, expected",
    [
        ("20*3=60\nAnswer: 60\n", "60"),
        ("20*3=60 (multiply)\nSo the answer is 60.\n", "60"),
        ("Answer: 060", "60"),
        ("Answer: -7\n", "-7"),
        ("1+1=2\nAnswer: 2\nAnswer: 3\n", "2"),  # the first answer counts
        ("20*3=60\n", None),
        ("Answer: sixty\n", None),
        ("Answer:\n", None),
        ("", None),
        ("The Answer: 5\n", None),
    ],
)
def test_extract_answer(text, expected):
    assert world.extract_answer(text) == expected


def test_check():
    assert world.check("137", "52+85=137\nAnswer: 137\n")
    assert world.check("137", "So the answer is 137.\n")
    assert not world.check("137", "Answer: 138\n")
    assert not world.check("137", "52+85=137\n")  # malformed: no answer line
    assert not world.check("137", "garbage")


def test_split_steps():
    assert world.split_steps("1+1=2\nAnswer: 2\nQ: junk\n") == ["1+1=2\n", "Answer: 2\n"]
    assert world.split_steps("1+1=2\n1+2") == ["1+1=2\n", "1+2\n"]
    assert world.split_steps("a\rb\n\nAnswer: 3") == ["a\rb\n", "\n", "Answer: 3\n"]
    assert world.split_steps("") == []


# ---------------------------------------------------------------- digit bugs


def test_digit_bug_primitives():
    assert solver.sub_dropping_borrows(52, 8) == 54
    assert solver.sub_dropping_borrows(100, 1) == 109
    assert solver.sub_dropping_borrows(58, 23) == 35  # no borrow needed: exact
    assert solver.add_dropping_carries(57, 25) == 72
    assert solver.add_dropping_carries(55, 55) == 100
    assert solver.add_dropping_carries(50, 50) == 100  # top column written whole: exact
    assert solver.mul_dropping_carries(27, 3) == 61
    assert solver.mul_dropping_carries(21, 3) == 63
    assert solver.mul_dropping_carries(27, 12) == 44 + 270  # 27*2 -> 44, 27*1 -> 27


def test_digit_bugs_only_change_when_needed():
    rng = random.Random(0)
    for _ in range(500):
        a, b = rng.randint(0, 9999), rng.randint(0, 999)
        da, db = str(a)[::-1], str(b)[::-1]
        if a >= b:
            needs = any(int(db[i]) > int(da[i]) for i in range(len(db)))
            assert (solver.sub_dropping_borrows(a, b) != a - b) == needs
            assert solver.sub_dropping_borrows(a, b) >= a - b
        assert solver.add_dropping_carries(a, b) <= a + b
        assert solver.mul_dropping_carries(a, b) <= a * b


def test_miscopy_changes_and_keeps_shape():
    rng = random.Random(1)
    for n in [1, 2, 9, 10, 11, 20, 57, 100, 990, 4321]:
        for _ in range(20):
            m = solver.miscopy(n, rng)
            assert m != n and m > 0 and len(str(m)) == len(str(n))


# ---------------------------------------------------------------- flawed solver


def test_rate_zero_gives_gold_solutions(splits):
    rng = random.Random(0)
    zero = {k: 0.0 for k in world.MECHANISMS}
    for p in splits["train"]:
        for cfg in (None, zero):
            steps, ok = solver.solve(p, "ds", cfg, rng)
            assert ok and steps == p["steps"]
        steps, ok = solver.solve(p, "qw", zero, rng)
        assert ok and world.check(p["answer"], "".join(steps))
        assert steps[-1] == f"So the answer is {p['answer']}.\n"


def test_borrow_fires_where_needed_and_propagates():
    p = _problem("Max 52 toys -8 +10 ?")
    tr = solver.solve_trace(p, "ds", {"borrow": 1.0}, random.Random(0))
    assert tr.steps == ["52-8=54\n", "54+10=64\n", "Answer: 64\n"]
    assert tr.errors == [(0, "borrow")] and not tr.correct
    # no borrow needed: the mechanism never fires
    p = _problem("Max 58 toys -23 +10 ?")
    tr = solver.solve_trace(p, "ds", {"borrow": 1.0}, random.Random(0))
    assert tr.correct and tr.errors == []


def test_carry_and_mul_carry_fire_where_needed():
    p = _problem("Max 57 toys +25 *3 ?")
    tr = solver.solve_trace(p, "ds", {"carry": 1.0}, random.Random(0))
    assert tr.steps[0] == "57+25=72\n" and tr.steps[1] == "72*3=216\n"
    assert tr.errors == [(0, "carry")]
    tr = solver.solve_trace(p, "ds", {"mul_carry": 1.0}, random.Random(0))
    assert tr.correct and tr.steps[1] == "82*3=246\n"  # top digit written whole: no carry
    p = _problem("Max 57 toys +20 *3 ?")
    tr = solver.solve_trace(p, "ds", {"mul_carry": 1.0}, random.Random(0))
    assert tr.steps[:2] == ["57+20=77\n", "77*3=211\n"] and tr.errors == [(1, "mul_carry")]
    p = _problem("Max 21 toys +22 *2 ?")  # no carry anywhere
    assert solver.solve_trace(p, "ds", ALL_ERRORS, random.Random(0)).correct


def test_rates_are_respected():
    p = _problem("Max 52 toys -8 ?")
    rng = random.Random(0)
    wrong = sum(not solver.solve(p, "ds", {"borrow": 0.3}, rng)[1] for _ in range(2000))
    assert 500 < wrong < 700


def test_copy_and_slip_errors():
    p = _problem("Max 52 toys -8 +17 ?")
    rng = random.Random(0)
    for _ in range(50):
        tr = solver.solve_trace(p, "ds", {"copy": 1.0}, rng)
        start, ops = world.parse_question(p["question"])
        assert tr.values[0] != start and [b for _, b in tr.ops] != [b for _, b in ops]
        assert {m for _, m in tr.errors} == {"copy"}
        # the written steps stay internally consistent (no other error)
        for (op, b), a, r in zip(tr.ops, tr.values[:-1], tr.values[1:], strict=True):
            assert world.apply_op(a, op, b) == r
        tr = solver.solve_trace(p, "ds", {"slip": 1.0, "slip_max": 2}, rng)
        assert not tr.correct or len(tr.errors) > 1
        gold = world.gold_values(52, [("-", 8), ("+", 17)])
        assert 1 <= abs(tr.values[1] - gold[1]) <= 2


def test_fixed_mode_same_context_same_mistake():
    a = _problem("Max 52 toys -8 ?")
    b = _problem("Ann 52 eggs -8 *2 ?")
    cfg = {"borrow": 0.5, "mode": "fixed", "salt": 0}
    outs = {solver.solve(p, "ds", cfg, random.Random(i))[0][0] for i in range(20) for p in (a, b)}
    assert len(outs) == 1
    # across many contexts about half of the needed borrows are dropped
    rng = random.Random(5)
    fired = needed = 0
    for _ in range(400):
        x, y = rng.randint(10, 99), rng.randint(1, 9)
        if x % 10 < y:
            needed += 1
            tr = solver.solve_trace(_problem(f"Max {x} toys -{y} ?"), "ds", cfg, rng)
            fired += bool(tr.errors)
    assert 0.35 < fired / needed < 0.65


def test_flawed_solver_deterministic(splits):
    cfg = world.DEFAULT_ERRORS
    one = [solver.solve(p, "ds", cfg, random.Random(7)) for p in splits["train"]]
    two = [solver.solve(p, "ds", cfg, random.Random(7)) for p in splits["train"]]
    assert one == two
    assert 0 < sum(ok for _, ok in one) < len(one)
    for (steps, ok), p in zip(one, splits["train"], strict=True):
        assert ok == world.check(p["answer"], "".join(steps))


# ---------------------------------------------------------------- pretraining corpus


def test_corpus_documents_and_exclusion(splits):
    held_out = splits["val"] + splits["test"]
    docs = solver.pretraining_corpus(
        splits["train"], "ds", world.DEFAULT_ERRORS, 300, seed=1, exclude=held_out,
        fresh_share=0.5,
    )
    assert len(docs) == 300
    banned = {world.signature(p["question"]) for p in held_out}
    for d in docs:
        assert d.startswith("Q: ") and d.endswith("\n")
        question = d.split("\n", 1)[0][3:]
        assert world.signature(question) not in banned
        assert world.extract_answer(d.split("A:\n", 1)[1]) is not None
    assert docs == solver.pretraining_corpus(
        splits["train"], "ds", world.DEFAULT_ERRORS, 300, seed=1, exclude=held_out,
        fresh_share=0.5,
    )
    qw = solver.pretraining_corpus(splits["train"], "qw", world.DEFAULT_ERRORS, 20, seed=1)
    assert all("So the answer is" in d for d in qw)


def test_corpus_refuses_held_out_problems(splits):
    with pytest.raises(ValueError, match="split"):
        solver.pretraining_corpus(splits["test"][:3], "ds", None, 5, 0)
    leaked = dict(splits["test"][0], split="train", id="gsm-train-99999")
    with pytest.raises(ValueError, match="val/test"):
        solver.pretraining_corpus([leaked], "ds", None, 5, 0, exclude=splits["test"])
