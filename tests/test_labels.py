import json
import random

import pytest
from tokenizers import Tokenizer, models, processors, trainers

from pipa import labels, solver, world
from pipa.alphamath import Solution


def sol(qid, k, steps, qs, row=None):
    return Solution(qid, f"{qid}-{k}", f"question {qid}", list(steps), [float(q) for q in qs],
                    qs[-1] == 1 if qs else False, row if row is not None else k)


# qA: one correct, two incorrect; qB: only correct; qC: only incorrect; qD: an empty
# solution; qE: a too-long correct one and a short incorrect one.
C1 = sol("qA", 0, ["ab\n", "Answer\n"], [0.3, 1])
I1 = sol("qA", 1, ["xy\n", "zzzz\n", "A\n"], [0.5, 0.2, -1])
I2 = sol("qA", 2, ["q\n", "A\n"], [0.9, -1])
C2 = sol("qB", 0, ["1234\n"], [1])
I3 = sol("qC", 0, ["k\n", "B\n"], [0.75, -1])
E1 = sol("qD", 0, [], [])
LONG = sol("qE", 0, ["x" * 50], [1])
IE = sol("qE", 1, ["y\n", "A\n"], [-0.5, -1])
HAND = [LONG, I3, C2, I2, E1, C1, IE, I1]


# ---------------------------------------------------------------- label rules


def test_answer_and_step_rules_with_threshold_boundary():
    assert labels.step_labels(C1, "answer", 0.5) == [1, 1]
    assert labels.step_labels(C1, "step", 1.0) == [1, 1]  # correct: all 1 whatever Q
    assert labels.step_labels(I1, "answer", 0.5) == [0, 0, 0]
    assert labels.step_labels(I1, "step", 0.5) == [1, 0, 0]  # Q == threshold -> 1
    assert labels.step_labels(I1, "step", 0.2) == [1, 1, 0]
    assert labels.step_labels(I1, "step", 0.51) == [0, 0, 0]
    assert labels.step_labels(I1, "step", -1) == [1, 1, 1]  # Q in [-1, 1] always >= -1
    assert labels.step_labels(I1, "step", 1) == [0, 0, 0]


@pytest.mark.parametrize("bad", [1.5, -1.01, float("nan"), float("inf"), "0.5", True])
def test_bad_threshold_names_value_and_range(bad):
    with pytest.raises(ValueError, match=r"\[-1, 1\]") as err:
        labels.label_solutions([C1], "step", bad)
    assert repr(bad) in str(err.value)
    with pytest.raises(ValueError):
        labels.build_setting([C1], "unpaired", "step", bad, 0)


def test_bad_choices():
    with pytest.raises(ValueError, match="labels"):
        labels.build_setting([C1], "unpaired", "token", 0.5, 0)
    with pytest.raises(ValueError, match="data"):
        labels.build_setting([C1], "both", "step", 0.5, 0)
    with pytest.raises(ValueError, match="unique"):
        labels.label_solutions([C1, C1], "step", 0.5)


def test_records_schema_and_order():
    recs = labels.label_solutions([I3, C2, I2, C1, I1], "step", 0.5)
    assert [r["sid"] for r in recs] == ["qA-0", "qA-1", "qA-2", "qB-0", "qC-0"]
    for r in recs:
        assert set(r) == {"rid", "qid", "sid", "question", "steps", "correct", "step_labels",
                          "pair"}
        assert r["pair"] is None and len(r["step_labels"]) == len(r["steps"])
        json.dumps(r)
    assert len({r["rid"] for r in recs}) == len(recs)


# ---------------------------------------------------------------- paired subset


def _many(seed=0, n_q=30):
    rng = random.Random(seed)
    out, row = [], 0
    for q in range(n_q):
        for k in range(rng.randint(1, 8)):
            correct = rng.random() < 0.5
            out.append(sol(f"q{q:02d}", k, ["s\n", "A\n"], [0.1, 1 if correct else -1], row))
            row += 1
    return out


def test_paired_matching_distinct_and_complete():
    sols = _many()
    pairs, stats = labels.paired_subset(sols, seed=1)
    used = [s.sid for p in pairs for s in p]
    assert len(used) == len(set(used))
    for pos, neg in pairs:
        assert pos.correct and not neg.correct and pos.qid == neg.qid
    by_q = {}
    for s in sols:
        by_q.setdefault(s.qid, [0, 0])[0 if s.correct else 1] += 1
    assert stats["pairs"] == sum(min(c, i) for c, i in by_q.values())
    assert stats["dropped_questions"] == {
        "no_correct": sum(c == 0 for c, _ in by_q.values()),
        "no_incorrect": sum(i == 0 for _, i in by_q.values()),
    }
    assert stats["unmatched_solutions"] == len(sols) - 2 * stats["pairs"]


def test_paired_deterministic_and_seeded():
    sols = _many()
    a, _ = labels.paired_subset(sols, seed=1)
    shuffled = list(sols)
    random.Random(9).shuffle(shuffled)
    b, _ = labels.paired_subset(shuffled, seed=1)
    c, _ = labels.paired_subset(sols, seed=2)
    key = [(p.sid, n.sid) for p, n in a]
    assert key == [(p.sid, n.sid) for p, n in b]
    assert key != [(p.sid, n.sid) for p, n in c]


def test_paired_records_sorted_by_pair_correct_first():
    recs, stats = labels.build_setting(_many(), "paired", "step", 0.5, seed=3)
    assert len(recs) == 2 * stats["pairs"]
    assert [r["pair"] for r in recs] == [k // 2 for k in range(len(recs))]
    assert [r["correct"] for r in recs] == [k % 2 == 0 for k in range(len(recs))]
    assert len({r["rid"] for r in recs}) == len(recs)
    again, _ = labels.build_setting(list(reversed(_many())), "paired", "step", 0.5, seed=3)
    assert again == recs


# ---------------------------------------------------------------- stats on the hand example


def test_unpaired_step_stats_hand_example():
    recs, st = labels.build_setting(HAND, "unpaired", "step", 0.5, seed=0, max_chars=20)
    assert [r["sid"] for r in recs] == ["qA-0", "qA-1", "qA-2", "qB-0", "qC-0", "qE-1"]
    assert {r["sid"]: r["step_labels"] for r in recs} == {
        "qA-0": [1, 1], "qA-1": [1, 0, 0], "qA-2": [1, 0], "qB-0": [1], "qC-0": [1, 0],
        "qE-1": [0, 0]}
    assert st["input_solutions"] == 8 and st["input_questions"] == 5
    assert st["skipped_solutions"] == {"empty_steps": 1, "too_long": 1}
    assert st["questions"] == 4 and st["solutions"] == 6
    assert st["positives"] == 2 and st["negatives"] == 4 and st["pairs"] == 0
    assert st["steps_labelled"] == {"0": 6, "1": 6}
    assert st["chars_labelled"] == {"0": 15, "1": 22}
    assert st["char_zero_share"] == pytest.approx(15 / 37)
    zs = st["zero_share_by_threshold"]
    assert list(zs) == ["-1", "-0.5", "0", "0.25", "0.5", "0.75", "1"]
    expected = {"-1": 0, "-0.5": 8, "0": 10, "0.25": 15, "0.5": 15, "0.75": 18, "1": 22}
    assert zs == pytest.approx({k: v / 37 for k, v in expected.items()})
    json.dumps(st, allow_nan=False)


def test_unpaired_answer_stats_hand_example():
    recs, st = labels.build_setting(HAND, "unpaired", "answer", 0.5, seed=0, max_chars=20)
    assert all(r["step_labels"] == [int(r["correct"])] * len(r["steps"]) for r in recs)
    assert st["chars_labelled"] == {"0": 22, "1": 15}
    assert st["zero_share_by_threshold"]["0.5"] == pytest.approx(15 / 37)  # step rule


def test_paired_stats_hand_example():
    recs, st = labels.build_setting(HAND, "paired", "step", 0.5, seed=0, max_chars=20)
    assert st["pairs"] == 1 and st["solutions"] == 2 and st["questions"] == 1
    assert st["dropped_questions"] == {"no_correct": 2, "no_incorrect": 1}  # qC, qE / qB
    assert st["unmatched_solutions"] == 4
    assert st["skipped_solutions"] == {"empty_steps": 1, "too_long": 1}
    assert recs[0]["sid"] == "qA-0" and recs[1]["sid"] in ("qA-1", "qA-2")
    assert recs[0]["pair"] == recs[1]["pair"] == 0
    # without max_chars the long correct solution of qE is kept and pairs with qE's incorrect
    _, st = labels.build_setting(HAND, "paired", "step", 0.5, seed=0)
    assert st["pairs"] == 2 and st["skipped_solutions"] == {"empty_steps": 1, "too_long": 0}
    assert st["dropped_questions"] == {"no_correct": 1, "no_incorrect": 1}


def test_a_solution_over_a_models_context_is_dropped_before_pairing():
    """``exceeds`` names the models whose context a solution does not fit (the labels stage
    passes pipa.context.context_check): such a solution never forms a pair, and the stats
    count it by model, so no pair loses its partner at training time."""
    too_long = {LONG.sid: ["qw"], I3.sid: ["ds", "qw"], E1.sid: ["ds"]}  # E1: no steps
    recs, st = labels.build_setting(HAND, "paired", "step", 0.5, seed=0,
                                    exceeds=lambda s: too_long.get(s.sid, []))
    _, by_chars = labels.build_setting(HAND, "paired", "step", 0.5, seed=0, max_chars=20)
    assert LONG.sid not in {r["sid"] for r in recs}
    assert st["pairs"] == by_chars["pairs"] == 1  # qE's long correct solution: no pair
    assert st["skipped_solutions"] == {"empty_steps": 1, "too_long": 2}
    assert st["too_long_by_model"] == {"ds": 1, "qw": 2}
    _, plain = labels.build_setting(HAND, "paired", "step", 0.5, seed=0)
    assert "too_long_by_model" not in plain


def test_context_check_uses_each_models_tokenizer_and_limit(tmp_path):
    """A solution fits a model when its prompt + response + EOS, tokenized as training
    tokenizes it, is at most ``arch.max_len`` tokens."""
    import dataclasses

    from pipa.config import load
    from pipa.context import context_check
    from pipa.models import encode_example, train_tokenizer

    cfg = load("params.yaml")
    texts = [world.format_prompt(C1.question) + "".join(C1.steps)] * 10
    for m in cfg.models:
        train_tokenizer(texts, 64, tmp_path / m)
    tok = train_tokenizer(texts, 64, tmp_path / "probe")
    p, r, _ = encode_example(tok, world.format_prompt(C1.question), "".join(C1.steps))
    n = len(p) + len(r)
    fams = dict(cfg.model_families)
    first, second = cfg.models[0], cfg.models[1]
    for name, limit in ((first, n), (second, n - 1)):
        fam = fams[name]
        fams[name] = dataclasses.replace(fam, arch=dataclasses.replace(fam.arch, max_len=limit))
    cfg = dataclasses.replace(cfg, model_families=fams)
    assert context_check(cfg, tmp_path)(C1) == [second]


def test_empty_setting_stats_are_json():
    recs, st = labels.build_setting([C2], "paired", "step", 0.5, seed=0)
    assert recs == [] and st["char_zero_share"] is None
    json.dumps(st, allow_nan=False)


# ---------------------------------------------------------------- token labels


def _tokenizer(corpus, vocab_size):
    tok = Tokenizer(models.BPE(unk_token="[UNK]"))
    alphabet = sorted({c for t in corpus for c in t})
    tok.train_from_iterator(corpus, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["[UNK]", "</s>"], initial_alphabet=alphabet,
        show_progress=False))
    tok.post_processor = processors.TemplateProcessing(
        single="$A </s>", special_tokens=[("</s>", tok.token_to_id("</s>"))])
    return tok


def _by_first_char(steps, step_labels, offsets):
    owner = [k for k, s in enumerate(steps) for _ in s]
    return [step_labels[owner[a]] if a < b else step_labels[-1] for a, b in offsets]


@pytest.mark.parametrize("vocab_size", [0, 200])  # 0: characters only; 200: BPE merges
def test_token_labels_with_real_tokenizer(vocab_size):
    probs = world.generate_problems(30, "gsm", seed=1)
    rng = random.Random(0)
    corpus = ["".join(solver.solve(p, "ds", world.DEFAULT_ERRORS, rng)[0]) for p in probs]
    tok = _tokenizer(corpus, vocab_size)
    steps = ["52-8=54\n", "54+10=64\n", "Answer: 64\n"]
    step_lab = [1, 0, 0]
    enc = tok.encode("".join(steps))
    assert enc.tokens[-1] == "</s>" and enc.offsets[-1] == (0, 0)
    got = labels.token_labels(steps, step_lab, enc.offsets)
    assert got == _by_first_char(steps, step_lab, enc.offsets)
    assert len(got) == len(enc.ids) and got[-1] == 0
    idx = labels.step_index(steps, enc.offsets)
    assert idx[0] == 0 and idx[-1] == 2 and idx == sorted(idx)
    if vocab_size == 0:
        assert got == [1] * 8 + [0] * 9 + [0] * 11 + [0]
    else:
        assert len(enc.ids) < 29  # merges happened
    # offsets over prompt + response: base shifts them
    prompt = world.format_prompt("Max 52 toys -8 +10 ?")
    enc2 = tok.encode(prompt + "".join(steps))
    resp = [(a, b) for a, b in enc2.offsets if a >= len(prompt) or a == b]
    assert labels.token_labels(steps, step_lab, resp, base=len(prompt))[0] == 1


def test_token_labels_span_and_errors():
    steps = ["ab\n", "cd\n"]
    # a token spanning the boundary gets the step of its first character
    assert labels.token_labels(steps, [1, 0], [(0, 2), (2, 4), (4, 6), (6, 6)]) == [1, 1, 0, 0]
    assert labels.step_index(steps, [(3, 4), (5, 6)]) == [1, 1]
    with pytest.raises(ValueError, match="outside"):
        labels.step_index(steps, [(6, 7)])
    with pytest.raises(ValueError, match="step labels"):
        labels.token_labels(steps, [1], [(0, 1)])
    with pytest.raises(ValueError, match="at least one step"):
        labels.step_index([], [(0, 1)])
