"""Every training loss of the paper as a pure function, and the ``ALGORITHMS`` table.

Conventions (see ``docs/ARCHITECTURE.md``, "Loss calling convention"):

* A loss is ``loss_fn(batch, hp) -> (loss, logs)``: ``batch`` a ``PairedBatch`` (DPO, IPO,
  Step-DPO) or an ``UnpairedBatch`` (the rest), ``hp`` the typed ``LossParams``; both are
  frozen dataclasses of ``pipa.loss_terms``, so a misspelt input or hyperparameter is an
  error, never a default. Which optional input a loss needs (token labels, step ids, value
  logits, KTO's mismatched pairs), it checks and names when missing.
* Per-token tensors have shape (B, T); position t holds the log-prob of response token t.
  ``mask`` (bool, (B, T)) marks response tokens. Values at masked-out positions never
  reach the loss or its gradient, even when they are ``-inf``, ``nan`` or huge: every input
  is first passed through ``torch.where(mask, x, 0)``.
* ``log f_t`` = ``policy_logps`` (the model being trained), ``log p_t`` = ``prior_logps``
  (frozen), ``r_t = log f_t - log p_t`` the implicit token reward and ``R(S) = sum_{t in S}
  r_t`` the implicit reward of a token set (``R(y)`` over all response tokens).
* ``token_labels`` are the c_t (float 0/1; anything > 0.5 counts as 1), ``is_correct`` (bool,
  (B,)) is the answer label, ``value_logits`` the value head's v_t with g_t = sigmoid(v_t).
* ``loss`` is a scalar (batch mean) and ``logs`` a dict of detached 0-dim float tensors,
  always with ``reward_correct`` / ``reward_incorrect`` (mean R(y) of correct / incorrect
  responses in the batch, NaN when there are none); the PIPA losses add
  ``value_label_likelihood``.
* Everything is computed in float32 and in log space (``logsigmoid``, a stable
  ``log(1 - exp(.))``), so finite inputs give a finite loss and finite gradients.

Token reduction. ``hp.reduction`` ("sum" | "mean") applies to the per-token losses (SFT,
PIPA): "sum" sums the token terms of each sequence, "mean" divides that sum by the
sequence's number of response tokens; both then average over the batch. The sequence-level
baselines (DPO, IPO, KTO, Step-DPO, Step-KTO) use the summed R(.) of their papers and ignore
it; IPO has its own ``hp.ipo_normalize`` switch (TRL's length normalisation).

One file holds every preference loss (about 530 lines, over the ~400 of the other modules):
a reader finds each algorithm's loss here, in one function, beside the ones it is compared
with; the shared pieces live in ``pipa.loss_terms``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from pipa import registry
from pipa.loss_terms import (
    _NAN,
    LossOutput,
    LossParams,
    PairedBatch,
    Responses,
    UnpairedBatch,
    _batch_mean,
    _check_2d,
    _check_batch,
    _check_mask,
    _clean,
    _labels,
    _mean_or_nan,
    _reduce_tokens,
    _require,
    _reward_logs,
    _sft_term,
    log1mexp,
    masked_sum,
    sequence_reward,
    sft_loss,
)

__all__ = [
    "ALGORITHMS",
    "PIPA_M_CLIP",
    "AlgorithmSpec",
    "LossParams",
    "PairedBatch",
    "Responses",
    "UnpairedBatch",
    "dpo_loss",
    "dpo_sft_loss",
    "ipo_loss",
    "kto_loss",
    "kto_sft_loss",
    "kto_z0",
    "log1mexp",
    "masked_sum",
    "pipa_log_probs",
    "pipa_m_fixed_g_loss",
    "pipa_m_loss",
    "pipa_m_sft_loss",
    "pipa_n_fixed_g_loss",
    "pipa_n_loss",
    "sequence_reward",
    "sft_loss",
    "step_dpo_l0_loss",
    "step_dpo_loss",
    "step_kto_loss",
    "step_kto_orig_loss",
]

#: PIPA-M clips F_t = f_t g_t / p_t to [0, 1 - PIPA_M_CLIP] (paper Section 2.6, eps = 1e-6).
PIPA_M_CLIP = 1e-6
_LOG_CLIP = math.log1p(-PIPA_M_CLIP)  # log(1 - 1e-6)


def kto_z0(
    kl_policy_logps: Tensor, kl_prior_logps: Tensor, kl_mask: Tensor, fn: str = "kto_z0"
) -> Tensor:
    """KTO's reference point z0 = max(0, mean_i R_kl(i)), detached (0-dim).

    R_kl(i) = sum over ``kl_mask`` of (kl_policy_logps - kl_prior_logps) for the mismatched
    pairs (x_i, y_{i+1}) of the batch (shape (B_kl, T_kl): ``UnpairedBatch.mismatched``).
    An empty KL batch gives z0 = 0.
    """
    _require(fn, **{"mismatched.policy_logps": kl_policy_logps,
                    "mismatched.prior_logps": kl_prior_logps, "mismatched.mask": kl_mask})
    _check_2d(fn, "mismatched.policy_logps", kl_policy_logps,
              **{"mismatched.prior_logps": kl_prior_logps, "mismatched.mask": kl_mask})
    _check_mask(fn, "mismatched.mask", kl_mask)
    with torch.no_grad():
        r_kl = sequence_reward(kl_policy_logps, kl_prior_logps, kl_mask)
        if r_kl.numel() == 0:
            return torch.zeros((), dtype=torch.float32, device=r_kl.device)
        return r_kl.mean().clamp(min=0.0)


# --------------------------------------------------------------------------------------
# paired: DPO, IPO, Step-DPO
# --------------------------------------------------------------------------------------


def _paired_logs(r_chosen: Tensor, r_rejected: Tensor) -> dict[str, Tensor]:
    r_chosen, r_rejected = r_chosen.detach().float(), r_rejected.detach().float()
    ones = torch.ones_like(r_chosen, dtype=torch.bool)
    return {
        "reward_correct": _mean_or_nan(r_chosen, ones),
        "reward_incorrect": _mean_or_nan(r_rejected, ones),
        "reward_accuracy": _mean_or_nan((r_chosen > r_rejected).float(), ones),
        "reward_margin": _mean_or_nan(r_chosen - r_rejected, ones),
    }


def _paired_rewards(fn: str, batch: PairedBatch, *, need_labels: bool = False
                    ) -> tuple[Responses, Responses]:
    """Check a paired batch (shapes, masks, equal batch sizes) and return its two sides."""
    y_pos, y_neg = batch.chosen, batch.rejected
    if need_labels:
        _require(fn, **{"rejected.token_labels": y_neg.token_labels})
    _check_2d(fn, "chosen.policy_logps", y_pos.policy_logps,
              **{"chosen.prior_logps": y_pos.prior_logps, "chosen.mask": y_pos.mask})
    _check_2d(fn, "rejected.policy_logps", y_neg.policy_logps,
              **{"rejected.prior_logps": y_neg.prior_logps, "rejected.mask": y_neg.mask,
                 "rejected.token_labels": y_neg.token_labels if need_labels else None})
    _require(fn, **{"chosen.prior_logps": y_pos.prior_logps,
                    "rejected.prior_logps": y_neg.prior_logps})
    _check_mask(fn, "chosen.mask", y_pos.mask)
    _check_mask(fn, "rejected.mask", y_neg.mask)
    if y_pos.policy_logps.shape[0] != y_neg.policy_logps.shape[0]:
        raise ValueError(
            f"{fn}: rejected.policy_logps has batch size {y_neg.policy_logps.shape[0]}, "
            f"expected {y_pos.policy_logps.shape[0]} (that of chosen.policy_logps)"
        )
    return y_pos, y_neg


def dpo_loss(batch: PairedBatch, hp: LossParams) -> LossOutput:
    """DPO: L = -log sigmoid(beta * (R(y+) - R(y-))), batch mean.

    Shapes: ``batch.chosen`` (B, T+), ``batch.rejected`` (B, T-). By Theorem A.1 this is
    -log p(c | x, (y+, y-)) with p(y | x, c=0) = prior and p(c=1 | x) = 1/2.
    Logs: ``reward_correct`` = mean R(y+), ``reward_incorrect`` = mean R(y-),
    ``reward_accuracy`` = fraction with R(y+) > R(y-), ``reward_margin``.
    """
    y_pos, y_neg = _paired_rewards("dpo_loss", batch)
    r_pos = sequence_reward(y_pos.policy_logps, y_pos.prior_logps, y_pos.mask)
    r_neg = sequence_reward(y_neg.policy_logps, y_neg.prior_logps, y_neg.mask)
    loss = _batch_mean(-F.logsigmoid(hp.beta * (r_pos - r_neg)))
    return loss, _paired_logs(r_pos, r_neg)


def dpo_sft_loss(batch: PairedBatch, hp: LossParams) -> LossOutput:
    """DPO + SFT: ``dpo_loss`` + sft_coef * NLL of the chosen answers (the NLL anchor of
    Pang et al. 2024's iterative RPO, the "extra SFT loss" the paper cites against DPO's
    falling reward of correct answers, Section 3.3.1; not in the paper's tables).

    The NLL term is -sum_t log f_t per chosen row, divided by its token count when
    ``hp.sft_reduction="mean"`` (as ``kto_sft_loss``), batch mean. Shapes and logs as in
    ``dpo_loss``; logs add ``sft_nll``.
    """
    loss, logs = dpo_loss(batch, hp)
    y_pos = batch.chosen
    sft, _ = _sft_term("dpo_sft_loss", y_pos.policy_logps, y_pos.mask, None,
                       hp.sft_reduction)
    logs["sft_nll"] = sft.detach()
    return loss + hp.sft_coef * sft, logs


def ipo_loss(batch: PairedBatch, hp: LossParams) -> LossOutput:
    """IPO: L = (h - 1/(2 beta))^2, batch mean.

    ``hp.ipo_normalize=False`` (OpenRLHF, used by the paper): h = R(y+) - R(y-).
    ``hp.ipo_normalize=True`` (TRL): h = R(y+)/|y+| - R(y-)/|y-| (|y| = number of response
    tokens, at least 1). Shapes as in ``dpo_loss``; logs as in ``dpo_loss`` (summed R).
    """
    y_pos, y_neg = _paired_rewards("ipo_loss", batch)
    r_pos = sequence_reward(y_pos.policy_logps, y_pos.prior_logps, y_pos.mask)
    r_neg = sequence_reward(y_neg.policy_logps, y_neg.prior_logps, y_neg.mask)
    if hp.ipo_normalize:
        h = (r_pos / y_pos.mask.sum(-1).clamp(min=1)
             - r_neg / y_neg.mask.sum(-1).clamp(min=1))
    else:
        h = r_pos - r_neg
    loss = _batch_mean((h - 1.0 / (2.0 * hp.beta)) ** 2)
    return loss, _paired_logs(r_pos, r_neg)


def _step_dpo(fn: str, keep_positive: bool, batch: PairedBatch, beta: float) -> LossOutput:
    y_pos, y_neg = _paired_rewards(fn, batch, need_labels=True)
    labels = _labels(y_neg.token_labels)
    pos_tokens = labels & y_neg.mask
    neg_tokens = ~labels & y_neg.mask
    r_pos = sequence_reward(y_pos.policy_logps, y_pos.prior_logps, y_pos.mask)
    r_neg0 = sequence_reward(y_neg.policy_logps, y_neg.prior_logps, neg_tokens)
    r_neg1 = sequence_reward(y_neg.policy_logps, y_neg.prior_logps, pos_tokens)
    margin = r_pos - r_neg0
    if keep_positive:
        margin = margin - r_neg1.detach()
    loss = _batch_mean(-F.logsigmoid(beta * margin))
    return loss, _paired_logs(r_pos, r_neg0 + r_neg1)


def step_dpo_loss(batch: PairedBatch, hp: LossParams) -> LossOutput:
    """Step-DPO, the paper's L1 (Appendix B, used in Table 1):

    L1 = -log sigmoid(beta * (R(y+) - R_{c=0}(y-) - sg(R_{c=1}(y-)))),

    R_{c=k}(y-) summing r_t over the rejected tokens with label k and sg the stop-gradient:
    the positive steps of the incorrect answer count in the forward value (which equals
    DPO's) but get no gradient. ``batch.rejected.token_labels`` (B, T-) holds c-_t.
    """
    return _step_dpo("step_dpo_loss", True, batch, hp.beta)


def step_dpo_l0_loss(batch: PairedBatch, hp: LossParams) -> LossOutput:
    """Step-DPO L0 (Appendix B): L0 = -log sigmoid(beta * (R(y+) - R_{c=0}(y-))).

    The positive steps of the incorrect answer are dropped from value and gradient.
    Logs report the full R(y-) like the other paired losses.
    """
    return _step_dpo("step_dpo_l0_loss", False, batch, hp.beta)


# --------------------------------------------------------------------------------------
# unpaired: KTO, Step-KTO
# --------------------------------------------------------------------------------------


def _check_unpaired(fn: str, batch: UnpairedBatch, *needed: str) -> Responses:
    """Check an unpaired batch: the named optional inputs present (``is_correct`` or a
    field of ``Responses``), every tensor (B, T) or (B,) as it should be."""
    y = batch.responses
    present = {"is_correct": batch.is_correct, **{k: getattr(y, k) for k in
               ("prior_logps", "token_labels", "step_ids", "value_logits")}}
    _require(fn, prior_logps=y.prior_logps, **{k: present[k] for k in needed})
    _check_2d(fn, "policy_logps", y.policy_logps, prior_logps=y.prior_logps, mask=y.mask,
              **{k: present[k] for k in needed if k != "is_correct"})
    _check_mask(fn, "mask", y.mask)
    _check_batch(fn, "is_correct", batch.is_correct, y.policy_logps.shape[0])
    return y


def _kto_inputs(fn: str, batch: UnpairedBatch, *needed: str) -> tuple[Responses, Tensor]:
    """The checked responses and z0 from ``batch.mismatched`` (required)."""
    y = _check_unpaired(fn, batch, "is_correct", *needed)
    kl = batch.mismatched
    if kl is None:
        raise ValueError(f"{fn}: missing required input 'mismatched' (KTO's (x_i, y_i+1) "
                         "pairs, for z0)")
    return y, kto_z0(kl.policy_logps, kl.prior_logps, kl.mask, fn)


def _kto_weights(desirable: Tensor, hp: LossParams) -> Tensor:
    """KTO's lambda_D on desirable terms and lambda_U on undesirable ones (TRL's
    ``desirable_weight`` / ``undesirable_weight``), as a tensor shaped like ``desirable``."""
    return torch.where(desirable, torch.tensor(float(hp.desirable_weight)),
                       torch.tensor(float(hp.undesirable_weight))).to(desirable.device)


def kto_loss(batch: UnpairedBatch, hp: LossParams) -> LossOutput:
    """KTO, batch mean of

    desirable (is_correct):   lambda_D * (1 - sigmoid(beta * (R(y) - z0)))
    undesirable:              lambda_U * (1 - sigmoid(beta * (z0 - R(y))))

    with z0 = max(0, mean over the mismatched pairs of R_kl), detached (``kto_z0``).
    Shapes: ``batch.responses`` (B, T); ``batch.is_correct`` (B,); ``batch.mismatched``
    (B_kl, T_kl). By Theorem A.2 (beta = 1) the loss is 1 - E p(c | x, y) with
    p(y | x, c=0) = prior and log p(c=0|x)/p(c=1|x) = z0. lambda_D = ``hp.desirable_weight``,
    lambda_U = ``hp.undesirable_weight`` (default 1, the paper's; the KTO paper advises
    lambda_D n_D / (lambda_U n_U) in [1, 4/3] on imbalanced data). Logs add ``z0``.
    """
    y, z0 = _kto_inputs("kto_loss", batch)
    correct = batch.is_correct.to(torch.bool)
    reward = sequence_reward(y.policy_logps, y.prior_logps, y.mask)
    beta = hp.beta
    per_row = torch.where(
        correct, torch.sigmoid(beta * (z0 - reward)), torch.sigmoid(beta * (reward - z0))
    )
    weight = _kto_weights(correct, hp)
    logs = _reward_logs(reward, correct)
    logs["z0"] = z0.detach().float()
    return _batch_mean(weight * per_row), logs


def step_kto_loss(batch: UnpairedBatch, hp: LossParams) -> LossOutput:
    """Step-KTO, the paper's L1 (Appendix B, used in Table 1), batch mean of

    correct answers:    1 - sigmoid(beta * (R(y) - z0))                  (= KTO)
    incorrect answers:  1 - sigmoid(beta * (z0 - R_{c=0}(y) - sg(R_{c=1}(y))))

    z0 and the weights lambda_D / lambda_U (on correct / incorrect answers) as in
    ``kto_loss``; ``batch.responses.token_labels`` (B, T) gives c_t. The forward value
    equals KTO's; the positive steps of an incorrect answer get no gradient.
    """
    y, z0 = _kto_inputs("step_kto_loss", batch, "token_labels")
    correct = batch.is_correct.to(torch.bool)
    labels = _labels(y.token_labels)
    r_pos = sequence_reward(y.policy_logps, y.prior_logps, y.mask & labels)
    r_neg = sequence_reward(y.policy_logps, y.prior_logps, y.mask & ~labels)
    reward = r_pos + r_neg
    beta = hp.beta
    undesirable = torch.sigmoid(beta * (r_neg + r_pos.detach() - z0))
    per_row = torch.where(correct, torch.sigmoid(beta * (z0 - reward)), undesirable)
    weight = _kto_weights(correct, hp)
    logs = _reward_logs(reward, correct)
    logs["z0"] = z0.detach().float()
    return _batch_mean(weight * per_row), logs


def step_kto_orig_loss(batch: UnpairedBatch, hp: LossParams) -> LossOutput:
    """Step-KTO as in Lin et al. (Appendix B): a KTO term per step k, summed over steps,

    L = sum_k [c_k (1 - sigmoid(beta (R_k - z0))) + (1 - c_k) (1 - sigmoid(beta (z0 - R_k)))]

    with R_k = sum of r_t over the tokens of step k and c_k the label of the step's first
    token. (The paper writes -sum_k sigma(.); it differs from this by a constant.)
    ``batch.responses.step_ids`` (B, T) integer: the step index of each response token, -1
    outside the response; tokens with ``mask`` False or ``step_ids`` < 0 are ignored. Batch
    mean over rows (a row without steps contributes 0). z0 as in ``kto_loss``; lambda_D /
    lambda_U weigh the desirable (c_k = 1) / undesirable steps.
    """
    fn = "step_kto_orig_loss"
    y, z0 = _kto_inputs(fn, batch, "token_labels", "step_ids")
    step_ids = y.step_ids
    if step_ids.dtype.is_floating_point or step_ids.dtype == torch.bool:
        raise ValueError(f"{fn}: step_ids must be an integer tensor, got {step_ids.dtype}")
    n_rows, length = y.policy_logps.shape
    valid = y.mask & (step_ids >= 0)
    ids = torch.where(valid, step_ids, torch.zeros_like(step_ids)).long()
    n_steps = int(ids.max().item()) + 1 if ids.numel() else 1
    r_tok = _clean(y.policy_logps, valid) - _clean(y.prior_logps, valid)
    step_r = r_tok.new_zeros(n_rows, n_steps).scatter_add(1, ids, r_tok)
    step_len = torch.zeros(n_rows, n_steps, dtype=torch.long, device=ids.device)
    step_len = step_len.scatter_add(1, ids, valid.long())
    present = step_len > 0
    pos = torch.arange(length, device=ids.device).expand(n_rows, length)
    first = torch.full((n_rows, n_steps), length, dtype=torch.long, device=ids.device)
    first = first.scatter_reduce(1, ids, torch.where(valid, pos, length), reduce="amin")
    labels = _labels(y.token_labels)
    step_label = torch.gather(labels, 1, first.clamp(max=length - 1))
    beta = hp.beta
    terms = torch.where(
        step_label, torch.sigmoid(beta * (z0 - step_r)), torch.sigmoid(beta * (step_r - z0))
    ) * _kto_weights(step_label, hp)
    per_row = torch.where(present, terms, torch.zeros_like(terms)).sum(-1)
    reward = sequence_reward(y.policy_logps, y.prior_logps, y.mask)
    logs = _reward_logs(reward, batch.is_correct.to(torch.bool))
    logs["z0"] = z0.detach().float()
    return _batch_mean(per_row), logs


def kto_sft_loss(batch: UnpairedBatch, hp: LossParams) -> LossOutput:
    """KTO + SFT (Table 4): ``kto_loss`` + sft_coef * NLL of the correct answers.

    The NLL term is -sum_t log f_t per correct row, divided by the row's token count when
    ``hp.sft_reduction="mean"`` (the default: the auxiliary-NLL convention of OpenRLHF/TRL,
    which keeps it on the scale of a per-token loss), averaged over the correct rows of the
    batch (0 if there are none). Logs add ``sft_nll``.
    """
    loss, logs = kto_loss(batch, hp)
    y = batch.responses
    sft, _ = _sft_term("kto_sft_loss", y.policy_logps, y.mask, batch.is_correct,
                       hp.sft_reduction)
    logs["sft_nll"] = sft.detach()
    return loss + hp.sft_coef * sft, logs


# --------------------------------------------------------------------------------------
# PIPA
# --------------------------------------------------------------------------------------


def pipa_log_probs(
    variant: Literal["m", "n"],
    policy_logps: Tensor,
    prior_logps: Tensor,
    value_logits: Tensor | None,
) -> tuple[Tensor, Tensor]:
    """Per-token (log F_t, log(1 - F_t)) of PIPA-M or PIPA-N, elementwise on finite inputs.

    ``value_logits`` v_t, g_t = sigmoid(v_t); None means g fixed at 0.5 (v_t = 0).
    Both start from the implicit reward r_t = log f_t - log p_t, computed first: f and p are
    log-probs of the same token and close, and adding log g before subtracting would lose
    the digits of r_t in float32 when |log p| is large (at log f = log p = -10, v = 12 the
    old order put PIPA-M's gradient 7% off a float64 reference).
    PIPA-M (Alg. 1): log F_t = r_t + log g_t, clipped from above at log(1 - 1e-6)
    (``torch.clamp``: zero gradient where the clip is active), and
    log(1 - F_t) = log1mexp(log F_t).
    PIPA-N (Alg. 1): F_t = tau(f g / (p (1 - g))) = sigmoid(a_t) with
    a_t = r_t + log g_t - log(1 - g_t) = r_t + v_t exactly, so log F_t = logsigmoid(a_t)
    and log(1 - F_t) = logsigmoid(-a_t).
    """
    r = policy_logps - prior_logps
    if value_logits is None:
        value_logits = torch.zeros_like(r)
    if variant == "m":
        log_f = (r + F.logsigmoid(value_logits)).clamp(max=_LOG_CLIP)
        return log_f, log1mexp(log_f)
    if variant == "n":
        a = r + value_logits
        return F.logsigmoid(a), F.logsigmoid(-a)
    raise ValueError(f"pipa_log_probs: variant must be 'm' or 'n', got {variant!r}")


def _pipa(fn: str, variant: Literal["m", "n"], batch: UnpairedBatch, fixed_g: bool,
          reduction: str) -> LossOutput:
    y = _check_unpaired(fn, batch, *(() if fixed_g else ("value_logits",)))
    mask, is_correct = y.mask, batch.is_correct
    _check_2d(fn, "policy_logps", y.policy_logps, token_labels=y.token_labels)
    if y.token_labels is None:
        _require(fn, is_correct=is_correct)
        labels = is_correct.to(torch.bool)[:, None].expand_as(mask)
    else:
        labels = _labels(y.token_labels)
    log_f = _clean(y.policy_logps, mask)
    log_p = _clean(y.prior_logps, mask)
    v = None if fixed_g else _clean(y.value_logits, mask)
    log_fp, log_1mfp = pipa_log_probs(variant, log_f, log_p, v)
    if fixed_g:
        log_g = torch.full_like(log_f, -math.log(2.0))
        log_1mg = log_g
    else:
        log_g, log_1mg = F.logsigmoid(v), F.logsigmoid(-v)
    per_token = torch.where(labels, -log_fp, -log_1mfp)
    loss = _batch_mean(_reduce_tokens(per_token, mask, reduction))

    if is_correct is None:  # answer label = every labelled token is 1 (and there is one)
        is_correct = ((labels | ~mask).all(-1)) & mask.any(-1)
    logs = _reward_logs((log_f - log_p).sum(-1), is_correct.to(torch.bool))
    with torch.no_grad():
        label_ll = torch.where(labels, log_g, log_1mg)
        n_tok = mask.sum()
        if int(n_tok) == 0:
            vll = torch.tensor(_NAN, dtype=torch.float32, device=mask.device)
        else:
            vll = torch.exp(_clean(label_ll, mask).sum() / n_tok)
    logs["value_label_likelihood"] = vll.detach().float()
    return loss, logs


_PIPA_DOC_INPUTS = """
    Shapes: ``batch.responses`` (B, T), its ``value_logits`` the head's v_t;
    ``batch.is_correct`` (B,). Without ``token_labels`` every token takes the answer label
    ``is_correct`` (answer-level PIPA). ``hp.reduction``: "sum" = sum of the token terms per
    sequence, "mean" = their mean over the sequence's response tokens; then batch mean.
    Logs: ``reward_correct``/``reward_incorrect`` (mean R(y); without ``is_correct`` a row is
    correct when all its labelled tokens are 1) and ``value_label_likelihood`` =
    exp(mean over the batch's labelled tokens of log p(c_t | x, y<t)), p(c_t=1) = g_t.
"""


def pipa_m_loss(batch: UnpairedBatch, hp: LossParams) -> LossOutput:
    """PIPA-M (Algorithm 1): with F_t = min(f_t g_t / p_t, 1 - 1e-6), g_t = sigmoid(v_t),

    L = -sum_{t: c_t=1} log F_t - sum_{t: c_t=0} log(1 - F_t).
    """
    return _pipa("pipa_m_loss", "m", batch, False, hp.reduction)


def pipa_n_loss(batch: UnpairedBatch, hp: LossParams) -> LossOutput:
    """PIPA-N (Algorithm 1): with F_t = tau(f_t g_t / (p_t (1 - g_t))), tau(x) = x/(1+x),

    L = -sum_{t: c_t=1} log F_t - sum_{t: c_t=0} log(1 - F_t),
    computed as logsigmoid(+-a_t), a_t = log f_t + log g_t - log p_t - log(1 - g_t).
    """
    return _pipa("pipa_n_loss", "n", batch, False, hp.reduction)


def pipa_m_fixed_g_loss(batch: UnpairedBatch, hp: LossParams) -> LossOutput:
    """PIPA-M with g_t fixed at 0.5 (Table 2 ablation); ``value_logits`` is ignored, so the
    value head takes no part in the graph."""
    return _pipa("pipa_m_fixed_g_loss", "m", batch, True, hp.reduction)


def pipa_n_fixed_g_loss(batch: UnpairedBatch, hp: LossParams) -> LossOutput:
    """PIPA-N with g_t fixed at 0.5 (Table 2 ablation): a_t = log f_t - log p_t;
    ``value_logits`` is ignored."""
    return _pipa("pipa_n_fixed_g_loss", "n", batch, True, hp.reduction)


def pipa_m_sft_loss(batch: UnpairedBatch, hp: LossParams) -> LossOutput:
    """PIPA-M + SFT (Table 4): ``pipa_m_loss`` + sft_coef * NLL of the correct answers
    (``is_correct`` required; NLL term as in ``kto_sft_loss``). Logs add ``sft_nll``."""
    fn = "pipa_m_sft_loss"
    _require(fn, is_correct=batch.is_correct)
    loss, logs = _pipa(fn, "m", batch, False, hp.reduction)
    y = batch.responses
    sft, _ = _sft_term(fn, y.policy_logps, y.mask, batch.is_correct, hp.sft_reduction)
    logs["sft_nll"] = sft.detach()
    return loss + hp.sft_coef * sft, logs


for _fn in (pipa_m_loss, pipa_n_loss, pipa_m_fixed_g_loss, pipa_n_fixed_g_loss,
            pipa_m_sft_loss):
    _fn.__doc__ = (_fn.__doc__ or "") + _PIPA_DOC_INPUTS


# --------------------------------------------------------------------------------------
# the table
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AlgorithmSpec(registry.Algorithm):
    """An algorithm of ``pipa.registry`` with its loss function (``loss_fn(batch, hp)``,
    the batch a ``PairedBatch`` or ``UnpairedBatch`` as ``data_kind`` says): what the
    trainer needs to know about it (it never branches on names)."""

    loss_fn: Callable[[PairedBatch | UnpairedBatch, LossParams], LossOutput] | None = None


ALGORITHMS: dict[str, AlgorithmSpec] = {
    name: AlgorithmSpec(**vars(a), loss_fn=globals()[a.loss])
    for name, a in registry.ALGORITHMS.items()
}
