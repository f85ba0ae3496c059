"""Search with a step scorer (pipa.search): the oracle lifts a step beam far above one sample
in the world and chance does not; majority vote and best-of-N pick what they should; every
mode counts the tokens it samples; the LM proposer is reproducible and, greedy at width 1,
is the greedy decode."""

from __future__ import annotations

import random

import pytest
from test_generation import char_tokenizer, tiny_model

from pipa import search
from pipa.generation import generate
from pipa.world import extract_answer, format_prompt, gold_values, parse_question, split_steps

QUESTIONS = [f"Max {10 + i} toys +{3 + i % 5} *{2 + i % 3} -{1 + i % 4} ?" for i in range(200)]


def noisy_solver(questions, p_right: float, seed: int = 0) -> search.Proposer:
    """A scripted policy in the world: each next step writes the right value with
    probability ``p_right`` (else one more); after the last operation, the answer line with
    the value it wrote last. A step's tokens: its characters."""
    problems = [parse_question(q) for q in questions]

    def propose(requests, round_):
        out = []
        for k, (p, prefix) in enumerate(requests):
            rng = random.Random(f"{seed}:{round_}:{k}:{p}:{prefix}")
            start, ops = problems[p]
            done_steps = prefix.count("\n")
            last = int(prefix.rsplit("=", 1)[1].split()[0]) if done_steps else start
            if done_steps == len(ops):
                text = f"Answer: {last}\n"
                out.append(search.Step(text, len(text), True))
                continue
            op, b = ops[done_steps]
            value = gold_values(last, [(op, b)])[1]
            if rng.random() >= p_right:
                value += 1
            text = f"{last}{op}{b}={value}\n"
            out.append(search.Step(text, len(text), False))
        return out
    return propose


def accuracy(results, questions) -> float:
    golds = [gold_values(*parse_question(q))[-1] for q in questions]
    return sum(extract_answer(r.text) == str(g) for r, g in zip(results, golds)) / len(golds)


def test_the_oracle_lifts_the_beam_far_above_one_sample_and_chance_does_not():
    propose = noisy_solver(QUESTIONS, p_right=0.5)
    n = len(QUESTIONS)
    oracle, chance = search.world_oracle(QUESTIONS), search.random_scorer(0, QUESTIONS)
    one = search.value_beam(n, propose, chance, beam_width=1, n_samples=1, max_steps=8)
    guided = search.value_beam(n, propose, oracle, beam_width=2, n_samples=4, max_steps=8)
    blind = search.value_beam(n, propose, chance, beam_width=2, n_samples=4, max_steps=8)
    assert accuracy(one, QUESTIONS) < 0.25            # 0.5^3 per solution
    assert accuracy(guided, QUESTIONS) > 0.8          # a wrong step survives ~1 in 16
    assert abs(accuracy(blind, QUESTIONS) - accuracy(one, QUESTIONS)) < 0.12
    # tokens: width 1 samples one solution; (2, 4) samples 4 then 8 steps per round
    assert all(r.tokens == len(r.text) for r in one)
    assert all(r.tokens > 4 * len(r.text) for r in guided)


def test_the_oracle_scores_every_step_so_far_and_the_answer_line():
    q = "Max 20 toys *3 -8 +85 ?"            # 20 -> 60 -> 52 -> 137
    oracle = search.world_oracle([q])
    right = ["20*3=60\n", "60-8=52\n", "52+85=137\n", "Answer: 137\n"]
    wrong_then_lucky = ["20*3=61\n", "61-8=52\n", "52+85=137\n", "Answer: 137\n"]
    styled = ["20*3=60 (times)\n", "60-8=52 (minus)\n", "52+85=137 (plus)\n",
              "So the answer is 137.\n"]
    extra = ["20*3=60\n", "60-8=52\n", "52+85=137\n", "137+1=138\n"]
    assert oracle([0] * 4, [right, wrong_then_lucky, styled, extra]) == [
        [1, 1, 1, 1], [0, 0, 0, 0], [1, 1, 1, 1], [1, 1, 1, 0]]
    assert oracle([0], [["20*3=60\n", "Answer: 52\n"]]) == [[1, 0]]


def test_the_random_scorer_is_a_fixed_function_of_the_prefix():
    a, b = search.random_scorer(0, ["q"]), search.random_scorer(1, ["q"])
    steps = [["x\n", "y\n"], ["x\n", "z\n"]]
    first = a([0, 0], steps)
    assert first == a([0, 0], steps) and first != b([0, 0], steps)
    assert first[0][0] == first[1][0] != first[1][1]     # same prefix, same score
    assert all(0 <= v < 1 for row in first for v in row)


def test_majority_vote_counts_answers_and_every_samples_tokens():
    samples = [("1+1=2\nAnswer: 2\n", 10), ("garbled", 4), ("Answer: 3\n", 6),
               ("So the answer is 3.\n", 7), ("Answer: 2\n", 5)]
    picked = search.majority_vote(samples, extract_answer)
    assert picked.text == "1+1=2\nAnswer: 2\n" and picked.tokens == 32   # 2 and 3 tie: first
    assert search.majority_vote(samples[2:], extract_answer).text == "Answer: 3\n"
    assert search.majority_vote([("none", 3)], extract_answer) == search.Searched("none", 3)


def test_best_of_n_ranks_by_the_minimum_or_the_last_step_end():
    q = "Max 20 toys *3 ?"                    # 60
    samples = [("20*3=61\nAnswer: 60\n", 9), ("20*3=60\nAnswer: 60\n", 9), ("", 1)]
    values = search.step_scores([samples], search.world_oracle([q]), split_steps)[0]
    assert values == [[0.0, 0.0], [1.0, 1.0], []]
    assert search.best_of_n(samples, values, "min") == search.Searched(samples[1][0], 19)
    made_up = [[0.9, 0.1], [0.5, 0.6], []]
    assert search.best_of_n(samples, made_up, "min").text == samples[1][0]
    assert search.best_of_n(samples, [[0.9, 0.7], [0.5, 0.6], []], "last").text == samples[0][0]
    with pytest.raises(ValueError, match="reduce"):
        search.best_of_n(samples, values, "mean")


@pytest.fixture(scope="module")
def lm():
    tok = char_tokenizer()
    return tiny_model(len(tok), seed=3), tok


PROMPTS = [format_prompt(q) for q in QUESTIONS[:6]]


def test_greedy_width_one_beam_is_the_greedy_decode_and_counts_its_tokens(lm):
    model, tok = lm
    propose = search.lm_proposer(model, tok, PROMPTS, max_step_tokens=8, temperature=0.0,
                                 seed=0, is_final=lambda s: extract_answer(s) is not None)
    beam = search.value_beam(len(PROMPTS), propose, search.random_scorer(0, QUESTIONS),
                             beam_width=1, n_samples=1, max_steps=6)
    # the same tokens drawn step by step: at most 6 steps of 8, so compare that far
    greedy = generate(model, tok, PROMPTS, max_new_tokens=6 * 8, batch_size=8)
    for got, want in zip(beam, greedy):
        assert got.text and (want.startswith(got.text) or got.text.startswith(want))
        assert got.tokens >= len(tok(got.text, add_special_tokens=False)["input_ids"])


def test_a_shared_prefill_reads_each_prefix_once_and_proposes_the_same_steps(lm):
    """A beam's B2 requests continue one prefix: SharedPrefill reads it once and copies its
    KV cache, and the sampled steps are those of one prefill per request."""
    model, tok = lm
    prefixes = ["", "Max 10 toys ", "1+2=3\n"]
    # three copies of each (problem, prefix), nine of one: more than a batch of 8
    requests = [(p, prefix) for p in range(3) for prefix in prefixes for _ in range(3)]
    requests += [(4, "7*2=14\n")] * 9
    prefilled = []

    def count_prefill(_module, _args, kwargs):
        if kwargs["input_ids"].shape[1] > 1:
            prefilled.append(kwargs["input_ids"].numel())

    def steps(share: bool):
        prefilled.clear()
        propose = search.lm_proposer(model, tok, PROMPTS, max_step_tokens=12,
                                     temperature=1.0, seed=11, batch_size=8,
                                     share_prefill=share)
        return propose(requests, 2), sum(prefilled)

    hook = model.register_forward_pre_hook(count_prefill, with_kwargs=True)
    try:
        (alone, read_alone), (shared, read_shared) = steps(False), steps(True)
    finally:
        hook.remove()
    assert shared == alone
    assert len({step.text for step in shared[-9:]}) > 1  # the copies still sample apart
    assert read_shared < read_alone / 2


def test_sampled_modes_are_reproducible_from_their_seed(lm):
    model, tok = lm
    def run(seed):
        sample = search.lm_sampler(model, tok, PROMPTS, max_new_tokens=16, temperature=1.0,
                                   seed=seed)
        drawn = search.sample_n(len(PROMPTS), sample, 3)
        propose = search.lm_proposer(model, tok, PROMPTS, max_step_tokens=6, temperature=1.0,
                                     seed=seed)
        beam = search.value_beam(len(PROMPTS), propose, search.random_scorer(seed, QUESTIONS),
                                 beam_width=2, n_samples=2, max_steps=2)
        return drawn, beam
    first, again, other = run(5), run(5), run(6)
    assert first == again and first != other
    drawn, beam = first
    assert all(len(d) == 3 and all(t >= 1 for _, t in d) for d in drawn)
    assert all(len({text for text, _ in d}) > 1 for d in drawn[:3])   # independent samples
    assert all(r.tokens >= 1 for r in beam)


def test_the_policy_beam_ranks_by_the_log_probability_the_text_has_under_the_policy(lm):
    """The policy beam's score is read from the proposals (Step.logprob, summed over the
    drawn tokens): it equals the log-probability a forward pass gives the step's text."""
    import torch

    from pipa.models import token_logps

    model, tok = lm
    propose = search.lm_proposer(model, tok, PROMPTS, max_step_tokens=12, temperature=1.0,
                                 seed=4)
    steps = propose([(p, "") for p in range(len(PROMPTS))], 0)
    # steps that re-encode to the tokens drawn (a random model may draw <pad>, which
    # decoding drops) and drew no EOS (its log-prob is in the step's, not in the text's)
    checked = 0
    for p, step in enumerate(steps):
        prompt = tok(PROMPTS[p], add_special_tokens=False)["input_ids"]
        text = tok(step.text, add_special_tokens=False)["input_ids"]
        if not step.text or len(text) != step.tokens:
            continue
        ids = torch.tensor([prompt + text])
        with torch.no_grad():
            logps = token_logps(model(input_ids=ids).logits.float(), ids)[0]
        assert float(logps[len(prompt):].sum()) == pytest.approx(step.logprob, abs=1e-3)
        checked += 1
    assert checked >= 3
    beam = search.value_beam(len(PROMPTS), propose, None, beam_width=2, n_samples=2,
                             max_steps=3)
    assert all(r.tokens >= 1 for r in beam)


def test_every_mode_runs_on_world_problems_and_counts_the_samples_it_shares(lm, tmp_path):
    from pipa.search_eval import search_modes
    from pipa.value_head import ValueHead

    model, tok = lm
    problems = [{"benchmark": "gsm" if i % 2 else "math", "id": f"p{i}", "question": q,
                 "answer": str(gold_values(*parse_question(q))[-1])}
                for i, q in enumerate(QUESTIONS[:4])]
    found = search_modes(model, ValueHead(32), tok, problems, format_prompt=format_prompt,
                         is_final=lambda s: extract_answer(s) is not None, setting="world",
                         fallback="none", budgets=[2, 4], beam_width=2, temperature=1.0,
                         max_step_tokens=8, max_new_tokens=24, max_steps=3, seed=0)
    modes = {(r["mode"], r["budget"], r["scorer"]): r for r in found["modes"]}
    # majority at every m up to the largest N (nested samples: each m is free)
    assert {m for mode, m, _ in modes if mode == "majority"} == {1, 2, 3, 4}
    for m in (1, 2, 3):
        assert all(a < b for a, b in zip(modes[("majority", m, None)]["tokens"],
                                         modes[("majority", m + 1, None)]["tokens"]))
    for n in (2, 4):
        assert {("majority", n, None), ("best_of_n_min", n, "g"), ("best_of_n_last", n, "g"),
                ("best_of_n_min", n, "oracle"), ("step_beam", n, "g"),
                ("step_beam", n, "policy"), ("step_beam", n, "random"),
                ("step_beam", n, "oracle")} <= set(modes)
    # majority and best-of-N read the same samples: the same tokens; twice N, twice the tokens
    assert modes[("majority", 4, None)]["tokens_per_problem"] == \
        modes[("best_of_n_min", 4, "g")]["tokens_per_problem"]
    assert modes[("majority", 4, None)]["tokens_per_problem"] > \
        modes[("majority", 2, None)]["tokens_per_problem"] > \
        modes[("greedy", 1, None)]["tokens_per_problem"] * 0.5
    assert all(set(r["accuracy"]) == {"gsm", "math"} for r in found["modes"])
    # g judged the samples that wrote at least one step, of 4 problems x the largest N
    assert 0 < found["verifier"]["solutions"] <= 4 * 4
    for row in found["modes"]:
        assert len(row["tokens"]) == 4
        assert row["tokens_per_problem"] == sum(row["tokens"]) / 4
    # per-problem verdicts in the problems' order, the accuracy their mean per benchmark
    assert [p["id"] for p in found["problems"]] == [p["id"] for p in problems]
    for row in found["modes"]:
        assert len(row["correct"]) == 4 and set(row["correct"]) <= {0, 1}
        assert row["accuracy"]["gsm"] == 100 * (row["correct"][1] + row["correct"][3]) / 2
    # without the references: no beam by chance or by the oracle; the rest unchanged
    bare = search_modes(model, ValueHead(32), tok, problems, format_prompt=format_prompt,
                        is_final=lambda s: extract_answer(s) is not None, setting="world",
                        fallback="none", budgets=[2, 4], beam_width=2, temperature=1.0,
                        max_step_tokens=8, max_new_tokens=24, max_steps=3, seed=0,
                        references=False)
    assert {r["scorer"] for r in bare["modes"]} == {None, "g", "policy"}
    assert [r for r in found["modes"] if r["scorer"] in (None, "g", "policy")] == \
        [dict(r, seconds=f["seconds"]) for r, f in zip(
            bare["modes"], [m for m in found["modes"] if m["scorer"] in (None, "g", "policy")])]
    # the records Table 5 reads, from the real modes: the table builds from them
    from pipa.reports.search_table import build

    spec = {"problems": 2, "budgets": [2, 4], "beam_width": 2, "temperature": 1.0,
            "max_step_tokens": 8, "references": True}
    records = [{**found, "spec": spec, "setting": "unpaired_step", "algorithm": "pipa_m",
                "model": "ds", "seed": 0},
               {**bare, "spec": {**spec, "references": False}, "setting": "unpaired_step",
                "algorithm": "pipa_m", "model": "ds", "seed": 1}]
    built = build(records, tmp_path)
    assert {f.name for f in tmp_path.iterdir()} == {
        "table5.md", "table5.tex", "table5.csv", "verifier.csv", "reliability.csv",
        "reliability.png"}
    long = built["table"].long
    assert set(long[long["reference"]]["scorer"]) == {"oracle", "random"}
    assert (long[~long["reference"]]["n_seeds"] == 2).all()
    assert (long[long["reference"]]["n_seeds"] == 1).all()
    with pytest.raises(ValueError, match="multiple of beam_width"):
        search_modes(model, ValueHead(32), tok, problems, format_prompt=format_prompt,
                     is_final=lambda s: False, setting="world", fallback="none",
                     budgets=[3], beam_width=2, temperature=1.0, max_step_tokens=8,
                     max_new_tokens=24, max_steps=3, seed=0)


def test_the_reliability_diagram_bins_g_against_final_correctness():
    from pipa.search_eval import reliability

    bins = reliability([0.05, 0.15, 0.12, 0.95, 1.0], [False, True, False, True, True], 10)
    assert [(b["low"], b["count"]) for b in bins] == [(0.0, 1), (0.1, 2), (0.9, 2)]
    assert bins[1]["correct"] == 0.5 and bins[1]["mean_g"] == pytest.approx(0.135)
    assert bins[2]["correct"] == 1.0          # g = 1.0 falls in the last bin


def _record(seed: int, model: str, beam_right: list[int], maj_right: list[int],
            beam_tokens: int = 25) -> dict:
    """A cell record as ``search_cell`` writes it, with scripted verdicts on the problems of
    two benchmarks (the first half gsm, the rest math): the value beam right where
    ``beam_right`` and sampling ``beam_tokens`` per problem; majority@m right where
    ``maj_right`` at 10 * m tokens, m = 1..4; best-of-N as majority."""
    n = len(maj_right)
    rows = [{"mode": "greedy", "budget": 1, "scorer": None, "correct": maj_right,
             "tokens": [9] * n}]
    rows += [{"mode": "majority", "budget": m, "scorer": None, "correct": maj_right,
              "tokens": [10 * m] * n} for m in range(1, 5)]
    rows += [{"mode": "step_beam", "budget": 4, "scorer": "g", "correct": beam_right,
              "tokens": [beam_tokens] * n},
             {"mode": "best_of_n_min", "budget": 4, "scorer": "g", "correct": maj_right,
              "tokens": [40] * n},
             {"mode": "step_beam", "budget": 4, "scorer": "oracle", "correct": [1] * n,
              "tokens": [30] * n}]
    problems = [{"benchmark": "gsm" if i < n // 2 else "math", "id": f"p{i}"} for i in range(n)]
    for r in rows:
        r.update(accuracy={}, tokens_per_problem=sum(r["tokens"]) / n, seconds=None)
    return {"setting": "unpaired_step", "algorithm": "pipa_m", "model": model, "seed": seed,
            "problems": problems, "modes": rows,
            "spec": {"problems": n // 2, "budgets": [4], "beam_width": 2, "temperature": 0.8,
                     "max_step_tokens": 48, "references": True},
            "verifier": {"auc_step": 0.5 + 0.1 * seed, "auc_last": 0.6, "auc_min": 0.55,
                         "solutions": 4 * n},
            "reliability": [{"low": 0.4, "high": 0.5, "mean_g": 0.45, "correct": 0.25,
                             "count": 10 + seed}]}


def test_table5_tests_the_value_beam_against_majority_at_matched_compute():
    from pipa.reports.search_table import (
        SearchRecordError,
        pooled_reliability,
        table5,
        verifier_table,
    )
    from pipa.reports.stats import min_detectable_difference

    # 40 gsm problems, then 40 math ones; majority 40% on gsm, 50% on math
    maj = [1] * 16 + [0] * 24 + [1] * 20 + [0] * 20
    better = [1] * 32 + [0] * 8 + [1] * 20 + [0] * 20   # gsm 80% on a superset; math = maj
    worse = [1] * 4 + [0] * 36 + [1] * 20 + [0] * 20    # gsm 10% on a subset
    records = [_record(s, "ds", better, maj) for s in (0, 1)] + \
        [_record(s, "qw", worse, maj, beam_tokens=45) for s in (0, 1)]
    t = table5(records, benchmark_labels={"gsm": "Tier 1"})
    long = t.long.set_index(["model", "benchmark", "mode", "scorer", "budget"])
    ds_beam, qw_beam = long.loc[("ds", "gsm", "step_beam", "g", 4)], \
        long.loc[("qw", "gsm", "step_beam", "g", 4)]
    assert ds_beam["p_vs_majority"] < 0.001 and qw_beam["p_vs_majority"] > 0.99
    assert ds_beam["mean"] == 80.0 and ds_beam["tokens_per_problem"] == 25.0
    # matched compute: 25 tokens -> maj@3 (30 tokens), the smallest vote that spent as many;
    # 45 tokens, more than the largest vote: maj@4, and the notes say so
    assert (ds_beam["majority_m"], ds_beam["majority_tokens"]) == (3, 30.0)
    assert (qw_beam["majority_m"], qw_beam["majority_tokens"]) == (4, 40.0)
    assert long.loc[("ds", "gsm", "best_of_n_min", "g", 4), "majority_m"] == 4
    assert "in 2 of 8 cells the row spent more than the largest vote" in t.markdown()
    # the benchmarks are kept apart: on math the beam equals the vote
    assert long.loc[("ds", "math", "step_beam", "g", 4), "mean"] == 50.0
    assert long.loc[("ds", "math", "step_beam", "g", 4), "p_vs_majority"] == 1.0
    assert ds_beam["mdd"] == pytest.approx(min_detectable_difference(
        [better[:40]] * 2, [maj[:40]] * 2))
    # best-of-N equal to majority everywhere: no evidence either way
    assert long.loc[("ds", "gsm", "best_of_n_min", "g", 4), "p_vs_majority"] == 1.0
    # majority itself and greedy carry no p; the oracle is a reference row
    assert t.long[t.long["mode"].isin(["majority", "greedy"])]["p_vs_majority"].isna().all()
    assert t.long.set_index("scorer").loc["oracle", "reference"].all()
    md = t.markdown()
    assert "**80.00 ± 0.00 (vs maj@3: p" in md and "oracle beam N=4: 100.0 / 100.0" in md
    assert "greedy on the same cells: ds 40.0 / 50.0; qw 40.0 / 50.0" in md
    assert "8 such tests, uncorrected for their number: about 0.4" in md
    assert "Power: the smallest difference" in md
    assert "Tier 1" in md and "tokens / problem" in md
    # majority is shown at the spec's budgets only (m = 1..3 serve the matching)
    assert md.count("| majority@N |") == 2
    v = verifier_table(records).set_index("model")
    assert v.loc["ds", "auc_step"] == pytest.approx(0.55) and v.loc["ds", "n_seeds"] == 2
    pooled = pooled_reliability(records)
    assert list(pooled["count"]) == [21, 21] and list(pooled["correct"]) == [0.25, 0.25]
    # cells that searched other problems or another spec cannot be paired: errors naming them
    other = _record(1, "ds", better, maj)
    other["problems"] = other["problems"][::-1]
    with pytest.raises(SearchRecordError, match="unpaired_step/pipa_m/ds/seed1: searched "
                                                 "other problems"):
        table5([records[0], other])
    other = _record(1, "ds", better, maj)
    other["spec"] = {**other["spec"], "temperature": 1.0}
    with pytest.raises(SearchRecordError, match="seed1: search spec .* differs from "
                                                 "unpaired_step/pipa_m/ds/seed0's"):
        table5([records[0], other])
    with pytest.raises(SearchRecordError, match="no searched cell"):
        table5([])


def test_table5_names_every_missing_cell_record(tmp_path):
    from pipa.reports.search_table import SearchRecordError, read_records

    with pytest.raises(SearchRecordError, match=r"2 searched cell\(s\) missing: .*a.json, "
                                                 r".*b.json; run their search stages"):
        read_records([({"seed": 0}, tmp_path / "a.json"), ({"seed": 1}, tmp_path / "b.json")])


def test_a_broken_record_is_an_error_naming_it(tmp_path):
    from pipa.reports.search_table import SearchRecordError, read_records

    (tmp_path / "a.json").write_text("{not json")
    with pytest.raises(SearchRecordError, match=r"a.json: not a search record .*delete it"):
        read_records([({"seed": 0}, tmp_path / "a.json")])


def test_a_cached_search_is_reused_only_for_the_same_spec_model_and_params(tmp_path):
    import json
    from dataclasses import asdict
    from pathlib import Path

    import yaml

    from pipa import config as C
    from pipa.search_eval import SearchSpec, cell_fingerprint, record_is_fresh

    cfg = C.load("params.yaml")
    model = tmp_path / "align" / "model"
    model.mkdir(parents=True)
    (model / "model.safetensors").write_bytes(b"weights")
    spec, path = SearchSpec(problems=10), tmp_path / "search.json"
    assert not record_is_fresh(path, spec, "x")                     # nothing cached yet
    fp = cell_fingerprint(cfg, tmp_path / "align")
    path.write_text(json.dumps({"spec": asdict(spec), "fingerprint": fp}))
    assert record_is_fresh(path, spec, fp)
    assert not record_is_fresh(path, SearchSpec(problems=20), fp)   # another spec
    (model / "model.safetensors").write_bytes(b"retrained")         # the cell re-trained
    assert cell_fingerprint(cfg, tmp_path / "align") != fp
    params = yaml.safe_load(Path("params.yaml").read_text())
    params["eval"]["max_new_tokens"] += 1                           # a search param moved
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    longer = C.load(tmp_path / "params.yaml")
    assert cell_fingerprint(longer, tmp_path / "align") != \
        cell_fingerprint(cfg, tmp_path / "align")
    path.write_text("{")
    with pytest.raises(ValueError, match="search.json: not a search record"):
        record_is_fresh(path, spec, fp)


def test_the_beam_survives_an_empty_first_step_and_stops_a_path_at_max_tokens():
    def propose(requests, round_):
        # request 0 of round 0 draws only an EOS; every other step is 5 tokens, never final
        return [search.Step("" if (round_, k) == (0, 0) else f"s{round_}\n",
                            1 if (round_, k) == (0, 0) else 5, (round_, k) == (0, 0))
                for k in range(len(requests))]

    def score(indices, steps):
        assert all(steps) and all(all(s) for s in steps)   # never asked to score nothing
        return [[0.5] * len(s) for s in steps]

    found = search.value_beam(1, propose, score, beam_width=2, n_samples=2, max_steps=10,
                              max_tokens=12)
    # the empty candidate scores -inf and drops out; the others stop after 3 steps (15 >= 12)
    assert found[0].text == "s0\ns1\ns2\n"
    assert found[0].tokens == 1 + 5 + 2 * 5 + 4 * 5   # rounds of 2, 2, then 4 requests
