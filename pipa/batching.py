"""Examples and batches: tokenized sequences with their per-token labels, padded into
tensors (``collate``), and the plan of every optimizer step's batch (``batch_plan``).

How a global batch is cut into micro-batches and shards across processes is described in
``pipa.training``; the plan is built once, the same on every process, from the seed.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch

from pipa.config import ConfigError


@dataclass
class Example:
    """One (prompt, response) sequence with its per-token labels."""

    rid: str
    sid: str
    prompt_ids: list[int]
    response_ids: list[int]
    token_labels: list[int]
    step_ids: list[int]
    correct: bool
    pair: int | None = None


def collate(examples: list[Example], pad_id: int,
            prior: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Right-pad a list of examples into (N, L) tensors aligned on token positions.

    Position t of ``response_mask``/``token_labels``/``prior_logps`` describes token
    ``input_ids[:, t]``, the same convention as ``token_logps`` (log-prob of token t given
    the tokens before it).
    """
    length = max(len(e.prompt_ids) + len(e.response_ids) for e in examples)
    n = len(examples)
    input_ids = torch.full((n, length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((n, length), dtype=torch.long)
    response_mask = torch.zeros((n, length), dtype=torch.bool)
    labels = torch.zeros((n, length), dtype=torch.float32)
    step_ids = torch.full((n, length), -1, dtype=torch.long)
    prior_logps = torch.zeros((n, length), dtype=torch.float32)
    for i, e in enumerate(examples):
        p, r = len(e.prompt_ids), len(e.response_ids)
        input_ids[i, : p + r] = torch.tensor(e.prompt_ids + e.response_ids)
        attention_mask[i, : p + r] = 1
        response_mask[i, p : p + r] = True
        labels[i, p : p + r] = torch.tensor(e.token_labels, dtype=torch.float32)
        step_ids[i, p : p + r] = torch.tensor(e.step_ids)
        if prior is not None:
            cached = prior[e.sid]
            if cached.numel() != r:
                raise ValueError(
                    f"prior log-probs of {e.sid} have {cached.numel()} tokens but the response "
                    f"has {r}: the prior cache was made with another tokenizer; re-run the "
                    "prior stage (dvc repro prior)"
                )
            prior_logps[i, p : p + r] = cached
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "response_mask": response_mask,
        "token_labels": labels,
        "step_ids": step_ids,
        "prior_logps": prior_logps,
        "is_correct": torch.tensor([e.correct for e in examples]),
    }


def to_device(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    """The collated batch (cached prior log-probs included) on ``device``; a no-op on the CPU."""
    return {k: v.to(device) for k, v in batch.items()}


def device_of(module: torch.nn.Module) -> torch.device:
    """Where a module's parameters live (after ``accelerator.prepare`` moved them)."""
    return next(module.parameters()).device


def mismatched(examples: list[Example]) -> list[Example]:
    """KTO's mismatched pairs (x_i, y_{i+1}), built inside the batch as its authors do.

    A pair's ``sid`` names both solutions (``<sid_i>~<sid_i+1>``): the key of its cached
    reference log-probs (``mismatched_examples``). A micro-batch of one sequence has no
    mismatched pair (its "(x_1, y_2)" would be the matched (x_1, y_1)): refused, as TRL does.
    """
    if len(examples) < 2:
        raise ConfigError(
            f"KTO's mismatched pairs need at least 2 sequences per micro-batch, got "
            f"{len(examples)}: raise align.batch_size or lower align.grad_accum (each "
            "process runs batch_size / (grad_accum x processes) sequences per micro-batch)")
    shifted = examples[1:] + examples[:1]
    return [
        Example(rid=a.rid + "~" + b.rid, sid=a.sid + "~" + b.sid, prompt_ids=a.prompt_ids,
                response_ids=b.response_ids, token_labels=b.token_labels, step_ids=b.step_ids,
                correct=b.correct)
        for a, b in zip(examples, shifted)
    ]


def step_sequences(units: list, data_kind: str) -> list[Example]:
    """The sequences one micro-batch scores: paired units give the chosen responses, then
    the rejected ones; unpaired units are the sequences."""
    if data_kind == "paired":
        return [c for c, _ in units] + [r for _, r in units]
    return list(units)


def mismatched_examples(plan: Iterable[list], data_kind: str) -> list[Example]:
    """Every mismatched pair that a batch plan's micro-batches will build, once each.

    KTO's z0 needs the reference on (x_i, y_{i+1}); the pairs depend on the batches (seed,
    batch size), so no per-dataset cache holds them, but a run's plan is fixed before it
    starts: the cell scores them all once, before training, and the loop reads them like
    the cached prior (the reference never runs inside the loop)."""
    seen: dict[str, Example] = {}
    for units in plan:
        for e in mismatched(step_sequences(units, data_kind)):
            seen.setdefault(e.sid, e)
    return list(seen.values())


def batch_plan(examples: list[Example], data_kind: str, correct_only: bool,
               batch_size: int, n_steps: int, seed: int, *, grad_accum: int = 1,
               num_processes: int = 1, process_index: int = 0,
               length_groups: int = 1) -> Iterator[list[Example]]:
    """Yield this process's micro-batches: ``n_steps × grad_accum`` of them.

    The plan is one of ``n_steps`` global batches of ``batch_size`` sequences, reshuffled
    every epoch, identical on every process (same seed). Paired algorithms get
    batch_size/2 (chosen, rejected) pairs, so every algorithm of a setting sees the same
    number of sequences per step and the same number of steps. Each global batch is cut
    into ``grad_accum`` consecutive chunks and process ``process_index`` of
    ``num_processes`` takes ``chunk[process_index::num_processes]`` of each: one process's
    micro-batch holds ``batch_size / (grad_accum × num_processes)`` sequences. With
    ``grad_accum = num_processes = 1`` each micro-batch is the whole global batch.

    ``length_groups = k > 1`` groups by length, as transformers' ``group_by_length`` does:
    each epoch's shuffled order is cut into runs of k batches, each run sorted by length and
    cut into batches again, and the batches of a run shuffled. Batches then hold sequences
    of similar length (on the default's data: 10% padding instead of 28% for k = 4, i.e.
    a fifth fewer tokens through the model) while every sequence is still seen once per
    epoch in a seeded random order.
    """
    rng = random.Random(seed)
    if data_kind == "paired":
        by_pair: dict[int, dict[bool, Example]] = {}
        for e in examples:
            if e.pair is None:
                raise ValueError(f"record {e.rid} has no pair index: paired data expected")
            by_pair.setdefault(e.pair, {})[e.correct] = e
        units = [(d[True], d[False]) for _, d in sorted(by_pair.items()) if len(d) == 2]
        per_batch = max(1, batch_size // 2)
    else:
        units = [e for e in examples if e.correct or not correct_only]
        per_batch = batch_size
    split = grad_accum * num_processes
    if grad_accum < 1 or num_processes < 1 or per_batch % split:
        unit = "pairs" if data_kind == "paired" else "sequences"
        raise ConfigError(
            f"batch_size={batch_size} ({per_batch} {unit} per step) does not split into "
            f"grad_accum={grad_accum} x {num_processes} processes equal micro-batches; make "
            f"batch_size a multiple of {split * (2 if data_kind == 'paired' else 1)} (or "
            "change grad_accum / the number of processes)"
        )
    if not units:
        raise ValueError("no training data for this algorithm/setting after filtering")
    chunk = per_batch // grad_accum
    order: list = []
    for _ in range(n_steps):
        if len(order) < per_batch:
            fresh = list(units)
            rng.shuffle(fresh)
            if length_groups > 1:
                fresh = _group_by_length(fresh, per_batch, length_groups, rng)
            order.extend(fresh)
        batch, order = order[:per_batch], order[per_batch:]
        for k in range(grad_accum):
            yield batch[k * chunk : (k + 1) * chunk][process_index::num_processes]


def _unit_length(unit) -> int:
    pair = unit if isinstance(unit, tuple) else (unit,)
    return max(len(e.prompt_ids) + len(e.response_ids) for e in pair)


def _group_by_length(units: list, per_batch: int, k: int, rng: random.Random) -> list:
    out: list = []
    run = per_batch * k
    for start in range(0, len(units), run):
        ordered = sorted(units[start : start + run], key=_unit_length, reverse=True)
        batches = [ordered[i : i + per_batch] for i in range(0, len(ordered), per_batch)]
        # A short last batch of the epoch stays last: the consumer tops it up with the
        # next epoch's sequences, as without grouping.
        full = [b for b in batches if len(b) == per_batch]
        rng.shuffle(full)
        out.extend(x for b in full + [b for b in batches if len(b) < per_batch] for x in b)
    return out


def steps_for(n_sequences: int, batch_size: int, epochs: float) -> int:
    return max(1, math.ceil(epochs * n_sequences / batch_size))
