"""pipa.verifier: the value head scored as a verifier (ROC AUC of g at step ends)."""

from __future__ import annotations

import math
import random

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from pipa import world
from pipa.models import encode_example, train_tokenizer
from pipa.value_head import PolicyWithValueHead, ValueHead
from pipa.verifier import roc_auc, step_end_tokens, step_end_values, verifier_metrics


def _brute_auc(scores, labels) -> float:
    pos = [s for s, y in zip(scores, labels) if y]
    neg = [s for s, y in zip(scores, labels) if not y]
    wins = sum((p > n) + 0.5 * (p == n) for p in pos for n in neg)
    return wins / (len(pos) * len(neg))


def test_roc_auc_known_values_ties_and_empty_classes():
    assert roc_auc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1]) == pytest.approx(0.75)
    assert roc_auc([1, 2, 3], [0, 1, 1]) == 1.0 and roc_auc([3, 2, 1], [0, 1, 1]) == 0.0
    assert roc_auc([0.5] * 4, [0, 1, 0, 1]) == 0.5  # a constant g knows nothing
    assert math.isnan(roc_auc([0.2, 0.3], [1, 1])) and math.isnan(roc_auc([], []))
    rng = random.Random(0)
    for _ in range(20):
        scores = [rng.choice([0.1, 0.2, 0.3, 0.4]) for _ in range(30)]
        labels = [rng.random() < 0.4 for _ in range(30)]
        if 0 < sum(labels) < 30:
            assert roc_auc(scores, labels) == pytest.approx(_brute_auc(scores, labels))
    with pytest.raises(ValueError, match="3 scores but 2 labels"):
        roc_auc([1, 2, 3], [0, 1])


def test_verifier_metrics_readings():
    # two correct solutions whose g is high at the end, one incorrect that dips
    values = [[0.6, 0.9], [0.5, 0.8], [0.7, 0.2], []]
    m = verifier_metrics(values, [True, True, False, False])
    assert (m["solutions"], m["correct"], m["step_ends"]) == (3, 2, 6)  # the empty one out
    assert m["auc_last"] == 1.0 and m["auc_min"] == 1.0
    assert m["auc_step"] == pytest.approx(_brute_auc([0.6, 0.9, 0.5, 0.8, 0.7, 0.2],
                                                     [1, 1, 1, 1, 0, 0]))
    assert m["mean_g_correct"] == pytest.approx(0.7)
    assert m["mean_g_incorrect"] == pytest.approx(0.45)


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    splits = world.make_splits({"gsm": {"train": 30, "val": 2, "test": 2}}, seed=5)
    texts = [world.format_prompt(p["question"]) + "".join(p["steps"]) for p in splits["train"]]
    return train_tokenizer(texts, 64, tmp_path_factory.mktemp("tok")), splits["train"][:5]


def test_step_end_tokens_hold_each_steps_newline(tok):
    tokenizer, problems = tok
    for p in problems:
        steps = p["steps"]
        _, _, offsets = encode_example(tokenizer, "", "".join(steps))
        ends = step_end_tokens(offsets, steps)
        assert len(ends) == len(steps) and ends == sorted(ends)
        text = "".join(steps)
        for t in ends:  # the token at a step's end covers that step's final "\n"
            a, b = offsets[t]
            assert text[a:b].endswith("\n")


def test_step_end_values_are_the_head_on_the_step_ends_hidden_state(tok):
    """g after a step = the head on the hidden state at the step's last token, whatever the
    batch (right padding), read through the same wrapper the trainer uses."""
    tokenizer, problems = tok
    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(
        vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)).eval()
    head = ValueHead(32)
    with torch.no_grad():
        head.fc2.weight.normal_(0, 1.0)  # far from 0.5, so positions matter
    policy = PolicyWithValueHead(model, head)
    solutions = [(p["question"], p["steps"]) for p in problems]
    batched = step_end_values(policy, tokenizer, world.format_prompt, solutions, batch_size=3)
    for (question, steps), got in zip(solutions, batched):
        prompt_ids, response_ids, offsets = encode_example(
            tokenizer, world.format_prompt(question), "".join(steps))
        ids = torch.tensor([prompt_ids + response_ids])
        with torch.no_grad():
            hidden = model(input_ids=ids, output_hidden_states=True).hidden_states[-1][0]
            want = [float(torch.sigmoid(head(hidden[len(prompt_ids) + t])))
                    for t in step_end_tokens(offsets, steps)]
        assert got == pytest.approx(want, abs=1e-5)
    with pytest.raises(ValueError, match="no value head"):
        step_end_values(PolicyWithValueHead(model, None), tokenizer, world.format_prompt,
                        solutions[:1])
