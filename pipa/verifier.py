"""PIPA's value head as a verifier: g = p(c = 1 | x, y<t), read where each step of a decoded
solution ends, scored against whether the solution's final answer is right.

PIPA trains g for free beside the policy; if it learned anything, g at the end of a step
should be higher on solutions that end correct. ``verifier_metrics`` measures that as ROC
AUC (0.5: g knows nothing; 1: g ranks every correct solution above every incorrect one) on
solutions the head never trained on: the cell's own greedy decodes of the validation
problems, graded by the benchmark's checker (``pipa.align.train_candidate``). Three
readings, as the search literature uses them: every step end (label: the solution's final
correctness), the last step end, and the minimum over a solution's step ends (Math-Shepherd's
ranking of whole solutions).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import torch

from pipa.batching import device_of
from pipa.models import encode_example


def roc_auc(scores: Sequence[float], labels: Sequence[bool]) -> float:
    """P(score of a positive > score of a negative), ties counted half (Mann-Whitney U with
    mid-ranks). NaN when either class is empty."""
    if len(scores) != len(labels):
        raise ValueError(f"roc_auc: {len(scores)} scores but {len(labels)} labels")
    n_pos = sum(1 for y in labels if y)
    n_neg = len(labels) - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = sorted(range(len(scores)), key=lambda i: scores[i])
    ranks = [0.0] * len(scores)
    i = 0
    while i < len(order):  # runs of equal scores share their mean rank (1-based)
        j = i
        while j + 1 < len(order) and scores[order[j + 1]] == scores[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2 + 1
        i = j + 1
    rank_sum = sum(r for r, y in zip(ranks, labels) if y)
    return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)


def step_end_tokens(offsets: Sequence[tuple[int, int]], steps: Sequence[str]) -> list[int]:
    """For each step, the index of the response token holding its last character (offsets
    are the response's, as ``pipa.models.encode_example`` returns them)."""
    ends, total = [], 0
    for step in steps:
        total += len(step)
        ends.append(total - 1)
    out = []
    for last_char in ends:
        token = next((t for t, (a, b) in enumerate(offsets) if a <= last_char < b), None)
        if token is None:
            raise ValueError(f"no token covers character {last_char} of the response")
        out.append(token)
    return out


@torch.no_grad()
def step_end_values(policy, tokenizer, format_prompt: Callable[[str], str],
                    solutions: Sequence[tuple[str, Sequence[str]]],
                    batch_size: int = 32) -> list[list[float]]:
    """g at the end of each step of each ``(question, steps)``: ``policy`` is a
    ``pipa.value_head.PolicyWithValueHead`` with a head. The value after a step's last token
    t is the head on the hidden state at t, which ``value_logits`` holds at t + 1 (the
    appended EOS makes that position exist for the last step)."""
    policy.eval()
    encoded = []
    for question, steps in solutions:
        prompt_ids, response_ids, offsets = encode_example(
            tokenizer, format_prompt(question), "".join(steps))
        ends = step_end_tokens(offsets, steps) if steps else []
        encoded.append((prompt_ids + response_ids, [len(prompt_ids) + t + 1 for t in ends]))
    pad = tokenizer.pad_token_id
    device = device_of(policy)
    values: list[list[float]] = []
    for start in range(0, len(encoded), batch_size):
        chunk = encoded[start:start + batch_size]
        length = max(len(ids) for ids, _ in chunk)
        ids = torch.full((len(chunk), length), pad, dtype=torch.long)
        mask = torch.zeros((len(chunk), length), dtype=torch.long)
        for row, (seq, _) in enumerate(chunk):  # right padding: positions stay the same
            ids[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
        _, value_logits = policy(ids.to(device), mask.to(device))
        if value_logits is None:
            raise ValueError("step_end_values: the policy has no value head")
        g = torch.sigmoid(value_logits.float()).cpu()
        values += [[float(g[row, p]) for p in positions]
                   for row, (_, positions) in enumerate(chunk)]
    return values


def verifier_metrics(values: Sequence[Sequence[float]], correct: Sequence[bool]) -> dict:
    """AUCs of g against final correctness: ``auc_step`` pools every step end (each labelled
    with its solution's correctness), ``auc_last`` takes the last step end, ``auc_min`` the
    lowest step end of each solution; with the counts they rest on and the mean g of
    correct and incorrect solutions' step ends. Solutions without a step are left out."""
    kept = [(v, bool(c)) for v, c in zip(values, correct) if len(v)]
    pooled = [(g, c) for v, c in kept for g in v]
    mean = {}
    for name, want in (("mean_g_correct", True), ("mean_g_incorrect", False)):
        gs = [g for g, c in pooled if c == want]
        mean[name] = sum(gs) / len(gs) if gs else math.nan
    return {
        "auc_step": roc_auc([g for g, _ in pooled], [c for _, c in pooled]),
        "auc_last": roc_auc([v[-1] for v, _ in kept], [c for _, c in kept]),
        "auc_min": roc_auc([min(v) for v, _ in kept], [c for _, c in kept]),
        "solutions": len(kept), "correct": sum(c for _, c in kept), "step_ends": len(pooled),
        **mean,
    }
