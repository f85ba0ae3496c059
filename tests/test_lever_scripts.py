"""The measuring scripts of issue #19 (``scripts/levers.py``, ``scripts/probe_value.py``):
what they summarise and where they read the value head's inputs."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from pipa.batching import Example
from pipa.value_head import PolicyWithValueHead, ValueHead

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    spec = importlib.util.spec_from_file_location(f"script_{name}",
                                                  ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _write_curve(folder: Path, name: str, values: list[float]) -> None:
    train = folder / "plots" / "metrics" / "train"
    train.mkdir(parents=True, exist_ok=True)
    rows = "".join(f"{step}\t{value}\n" for step, value in enumerate(values))
    (train / f"{name}.tsv").write_text(f"step\t{name}\n{rows}")


def test_lever_curves_are_the_second_half_margin_and_the_last_tenth_of_g(tmp_path):
    levers = _script("levers")
    steps = 21  # steps 0..20: the second half is 10..20, the last tenth 18..20
    _write_curve(tmp_path, "reward_correct", [float(s) for s in range(steps)])
    _write_curve(tmp_path, "reward_incorrect", [-1.0] * steps)
    _write_curve(tmp_path, "value_label_likelihood", [0.5] * 18 + [0.6, 0.7, 0.8])
    out = levers.curve_summary(tmp_path)
    assert out["margin_second_half"] == pytest.approx(15.0 + 1.0)  # mean of 10..20, +1
    assert out["g_likelihood_last_tenth"] == pytest.approx(0.7)


def test_lever_curves_leave_out_what_a_run_did_not_log(tmp_path):
    levers = _script("levers")
    _write_curve(tmp_path, "reward_correct", [0.0, 1.0])
    _write_curve(tmp_path, "reward_incorrect", [0.0, -1.0])
    assert levers.curve_summary(tmp_path) == {"margin_second_half": 2.0}


def test_label_likelihood_is_figure_3s_geometric_mean():
    probe = _script("probe_value")
    y = torch.tensor([1.0, 1.0, 1.0, 0.0])
    assert probe.label_likelihood(torch.full((4,), 0.75), y) == pytest.approx(
        math.exp(0.75 * math.log(0.75) + 0.25 * math.log(0.25)))
    assert probe.label_likelihood(torch.tensor([0.9, 0.8, 0.7, 0.4]), y) == pytest.approx(
        (0.9 * 0.8 * 0.7 * 0.6) ** 0.25)


def _tiny_policy(vocab: int = 12):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=vocab, hidden_size=16, num_hidden_layers=1,
                      num_attention_heads=2, num_key_value_heads=2, intermediate_size=32,
                      max_position_embeddings=64, pad_token_id=0, eos_token_id=1)
    return LlamaForCausalLM(cfg).eval()


def _examples() -> list[Example]:
    shapes = [(3, 4), (5, 2), (2, 6)]  # (prompt, response) lengths: padding differs by row
    out = []
    for i, (n_prompt, n_response) in enumerate(shapes):
        prompt = [2 + (i + k) % 9 for k in range(n_prompt)]
        response = [2 + (3 * i + k) % 9 for k in range(n_response)]
        labels = [int((i + k) % 2 == 0) for k in range(n_response)]
        out.append(Example(rid=f"r{i}", sid=f"s{i}", prompt_ids=prompt,
                           response_ids=response, token_labels=labels,
                           step_ids=[0] * n_response, correct=bool(i % 2)))
    return out


def test_probe_reads_the_states_the_value_head_reads_during_alignment():
    """Each response token's feature is the hidden state PolicyWithValueHead gives the
    head for that token (the state that predicts it), in example then token order."""
    probe = _script("probe_value")
    model, examples = _tiny_policy(), _examples()
    x, y, owner = probe.token_features(model, examples, pad_id=0, batch_size=2)
    assert x.shape[0] == y.shape[0] == owner.shape[0] == sum(len(e.response_ids)
                                                             for e in examples)
    torch.manual_seed(1)
    head = ValueHead(16)
    policy = PolicyWithValueHead(model, head).eval()
    expected, labels = [], []
    with torch.no_grad():
        for e in examples:  # one row at a time: no padding at all
            ids = torch.tensor([e.prompt_ids + e.response_ids])
            _, v = policy(ids, torch.ones_like(ids))
            expected.append(v[0, len(e.prompt_ids):])
            labels += e.token_labels
        got = head(x)
    torch.testing.assert_close(got, torch.cat(expected), atol=1e-5, rtol=1e-4)
    assert y.tolist() == [float(c) for c in labels]
    assert owner.tolist() == [i for i, e in enumerate(examples) for _ in e.response_ids]


def test_trunk_fit_returns_g_in_the_probes_token_order():
    """With no epoch, the trunk fit's g on every token equals the head on token_features:
    the two paths agree on which token each value belongs to."""
    probe = _script("probe_value")
    model, examples = _tiny_policy(), _examples()
    x, _, _ = probe.token_features(model, examples, pad_id=0, batch_size=3)
    torch.manual_seed(2)
    head = ValueHead(16)
    with torch.no_grad():
        want = torch.sigmoid(head(x))
    args = SimpleNamespace(epochs=0, lr=1e-3, trunk_lr=1e-4)
    got = probe.fit_head_and_trunk(head, model, examples, examples[::2], 0, args)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-4)


def test_oracle_bound_splits_tokens_at_the_first_wrong_step():
    """Tokens of steps after the first wrong step form one case, the rest the other (and,
    with position, one case per step index); g is each case's label rate."""
    probe = _script("probe_value")
    question = "Ida 8 shells *2 +74 ?"  # gold: 16, then 90
    records = [
        {"rid": "a", "question": question, "steps": ["8*2=16\n", "16+74=90\n", "Answer: 90\n"]},
        {"rid": "b", "question": question, "steps": ["8*2=16\n", "16+74=80\n", "Answer: 80\n"]},
    ]
    examples = [  # two tokens a step; b's labels: 1, then 0 from its wrong second step
        Example(rid="a", sid="a", prompt_ids=[2], response_ids=[3] * 6,
                token_labels=[1] * 6, step_ids=[0, 0, 1, 1, 2, 2], correct=True),
        Example(rid="b", sid="b", prompt_ids=[2], response_ids=[3] * 6,
                token_labels=[1, 1, 0, 0, 0, 0], step_ids=[0, 0, 1, 1, 2, 2], correct=False),
    ]
    out = probe.oracle_bound(records, examples)
    assert out["tokens"] == 12
    assert out["after_an_error_share"] == pytest.approx(2 / 12, abs=1e-4)
    # after b's wrong step 1: b's two step-2 tokens, both labelled 0 (g = 0, clipped);
    # the other ten tokens: eight 1s and two 0s (g = 0.8)
    clip = math.log(1 - 1e-6)
    expected = math.exp((8 * math.log(0.8) + 2 * math.log(0.2) + 2 * clip) / 12)
    assert out["detector"] == pytest.approx(expected, abs=1e-4)
    # with position: step 0 (four 1s), step 1 (two 1s, two 0s), step 2 clean (a's two 1s),
    # step 2 after the error (b's two 0s)
    expected = math.exp((8 * clip + 4 * math.log(0.5)) / 12)
    assert out["detector_and_position"] == pytest.approx(expected, abs=1e-4)
    assert out["constant_floor"] == pytest.approx(
        math.exp(8 / 12 * math.log(8 / 12) + 4 / 12 * math.log(4 / 12)), abs=1e-4)
