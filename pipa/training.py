"""The one training loop, and the batching around it.

``fit`` runs any objective: pretraining (every token), SFT and prior fine-tuning (response
tokens of chosen solutions), and alignment (a loss from ``pipa.losses.ALGORITHMS``). The
trainer never branches on an algorithm's name; it reads the algorithm's spec (which data
kind it needs, whether it needs the value head or KTO's mismatched pairs).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch

from pipa.labels import step_index, token_labels
from pipa.models import encode_example


class NonFiniteLoss(RuntimeError):
    """Raised when a loss or a logged quantity is NaN/inf; names step, samples and quantity."""


def setup_runtime(threads: int, seed: int) -> None:
    """Same params and seed, same numbers: fixed thread count, deterministic kernels."""
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    random.seed(seed)
    torch.manual_seed(seed)


# ---------------------------------------------------------------- examples and batches


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


def build_examples(records: list[dict], tokenizer, format_prompt: Callable[[str], str],
                   max_len: int) -> tuple[list[Example], dict[str, int]]:
    """Tokenize labelled records; sequences longer than ``max_len`` are skipped and counted."""
    examples, skipped = [], {"too_long": 0}
    for rec in records:
        prompt_ids, response_ids, offsets = encode_example(
            tokenizer, format_prompt(rec["question"]), "".join(rec["steps"])
        )
        if len(prompt_ids) + len(response_ids) > max_len:
            skipped["too_long"] += 1
            continue
        examples.append(
            Example(
                rid=rec["rid"],
                sid=rec["sid"],
                prompt_ids=prompt_ids,
                response_ids=response_ids,
                token_labels=token_labels(rec["steps"], rec["step_labels"], offsets),
                step_ids=step_index(rec["steps"], offsets),
                correct=bool(rec["correct"]),
                pair=rec.get("pair"),
            )
        )
    return examples, skipped


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


def mismatched(examples: list[Example]) -> list[Example]:
    """KTO's mismatched pairs (x_i, y_{i+1}), built inside the batch as its authors do."""
    shifted = examples[1:] + examples[:1]
    return [
        Example(rid=a.rid + "~" + b.rid, sid=b.sid, prompt_ids=a.prompt_ids,
                response_ids=b.response_ids, token_labels=b.token_labels, step_ids=b.step_ids,
                correct=b.correct)
        for a, b in zip(examples, shifted)
    ]


def batch_plan(examples: list[Example], data_kind: str, correct_only: bool,
               batch_size: int, n_steps: int, seed: int) -> Iterator[list[Example]]:
    """Yield ``n_steps`` batches of ``batch_size`` sequences, reshuffling every epoch.

    Paired algorithms get batch_size/2 (chosen, rejected) pairs, so every algorithm of a
    setting sees the same number of sequences per step and the same number of steps.
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
    if not units:
        raise ValueError("no training data for this algorithm/setting after filtering")
    order: list = []
    for _ in range(n_steps):
        if len(order) < per_batch:
            fresh = list(units)
            rng.shuffle(fresh)
            order.extend(fresh)
        batch, order = order[:per_batch], order[per_batch:]
        yield batch


def steps_for(n_sequences: int, batch_size: int, epochs: float) -> int:
    return max(1, math.ceil(epochs * n_sequences / batch_size))


# ---------------------------------------------------------------- forward helpers


def forward_logps(policy, batch: dict[str, torch.Tensor]):
    """Per-token log-probs (N, L) and value logits aligned the same way (or None).

    ``policy`` is a ``PolicyWithValueHead``: position t holds log pi(token t | tokens < t)
    and the value logit from the hidden state that predicts token t, as the paper defines g_t.
    """
    from pipa.value_head import token_logps

    logits, value = policy(batch["input_ids"], batch["attention_mask"])
    return token_logps(logits, batch["input_ids"]), value


def _loss_inputs(batch, logps, values, prefix=""):
    return {f"{prefix}policy_logps": logps, f"{prefix}prior_logps": batch["prior_logps"],
            f"{prefix}mask": batch["response_mask"],
            f"{prefix}token_labels": batch["token_labels"],
            f"{prefix}step_ids": batch["step_ids"], f"{prefix}value_logits": values}


def alignment_step(spec, policy, batches: Iterator, prior: dict[str, torch.Tensor],
                   pad_id: int, hparams: dict, ref_model=None) -> Callable[[int], tuple]:
    """The per-step function of an alignment run, driven by the algorithm's spec.

    One forward over every sequence of the batch (for paired data: the chosen then the
    rejected responses), cached prior log-probs, and, for KTO's family, the mismatched
    pairs (x_i, y_{i+1}) scored without a graph (z0 is detached) by policy and reference.
    """

    def step_fn(step: int):
        units = next(batches)
        paired = spec.data_kind == "paired"
        seqs = [c for c, _ in units] + [r for _, r in units] if paired else units
        batch = collate(seqs, pad_id, prior)
        logps, values = forward_logps(policy, batch)
        if paired:
            n = len(units)
            inputs = {}
            for prefix, part in (("chosen_", slice(0, n)), ("rejected_", slice(n, None))):
                sub = {k: v[part] for k, v in batch.items()}
                inputs.update(_loss_inputs(sub, logps[part],
                                           None if values is None else values[part], prefix))
        else:
            inputs = _loss_inputs(batch, logps, values)
            inputs["is_correct"] = batch["is_correct"]
        if spec.needs_mismatched:
            kl = collate(mismatched(seqs), pad_id)
            with torch.no_grad():
                kl_logps, _ = forward_logps(policy, kl)
                kl_prior, _ = forward_logps(ref_model, kl)
            inputs.update(kl_policy_logps=kl_logps, kl_prior_logps=kl_prior,
                          kl_mask=kl["response_mask"])
        loss, logs = spec.loss_fn(**inputs, **hparams)
        return loss, logs, [e.rid for e in seqs], int(batch["attention_mask"].sum())

    return step_fn


def check_finite(step: int, ids: list[str], **quantities) -> None:
    for name, value in quantities.items():
        if value is None or not torch.is_tensor(value):
            continue
        if not torch.isfinite(value).all():
            shown = ", ".join(ids[:8]) + (" ..." if len(ids) > 8 else "")
            raise NonFiniteLoss(
                f"non-finite {name} at step {step} (samples: {shown}); lower the learning "
                "rate or check the inputs of these samples"
            )


# ---------------------------------------------------------------- the loop


def cosine_lr(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the peak lr: linear warmup, then cosine decay to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def fit(params_to_train, step_fn: Callable[[int], tuple], n_steps: int, *, lr: float,
        warmup: int = 0, min_lr_ratio: float = 1.0, weight_decay: float = 0.0,
        grad_clip: float = 1.0, live=None, prefix: str = "train", desc: str = "train",
        progress: bool = True) -> dict[str, float]:
    """Run ``n_steps`` optimizer steps; ``step_fn(step)`` returns (loss, logs, ids, n_tokens).

    Logs every step through dvclive (``live``) when given. Returns the last step's logs.
    """
    from tqdm import tqdm

    params_to_train = [p for p in params_to_train if p.requires_grad]
    opt = torch.optim.AdamW(params_to_train, lr=lr, weight_decay=weight_decay,
                            betas=(0.9, 0.95))
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: cosine_lr(s, n_steps, warmup, min_lr_ratio)
    )
    last: dict[str, float] = {}
    bar = tqdm(range(n_steps), desc=desc, disable=not progress, mininterval=2.0,
               dynamic_ncols=True)
    for step in bar:
        started = time.perf_counter()
        loss, logs, ids, n_tokens = step_fn(step)
        check_finite(step, ids, loss=loss, **{k: v for k, v in logs.items()
                                               if k.startswith("loss")})
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(params_to_train, grad_clip)
        check_finite(step, ids, gradient_norm=grad_norm)
        current_lr = opt.param_groups[0]["lr"]
        opt.step()
        sched.step()
        elapsed = time.perf_counter() - started
        last = {"loss": float(loss.detach())}
        last.update({k: float(v) for k, v in logs.items()})
        last.update({"lr": current_lr, "tokens_per_s": n_tokens / max(elapsed, 1e-9)})
        if live is not None:
            for name, value in last.items():
                if math.isfinite(value):
                    live.log_metric(f"{prefix}/{name}", value)
            live.next_step()
        if step % 10 == 0:
            bar.set_postfix(loss=f"{last['loss']:.4f}")
    return last
