"""What every loss of ``pipa.losses`` reads and is built from, and SFT's loss.

The typed inputs of every loss (``Responses``, ``PairedBatch``, ``UnpairedBatch``,
``LossParams``), the input checks, masked sums, token reduction, batch means and reward logs that the losses
share (conventions: ``pipa.losses``'s docstring), and ``sft_loss``, the NLL that SFT, the
Table 3 priors and the continued-SFT control train with. Kept apart from the preference
losses so that the stages which only fine-tune (SFT, priors) never depend on them: an edit
to DPO's loss re-runs the alignment cells, not SFT (``pipa/code_manifest.py``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any, Literal

import torch
from torch import Tensor

Reduction = Literal["sum", "mean"]
LossOutput = tuple[Tensor, dict[str, Tensor]]
_NAN = float("nan")


# --------------------------------------------------------------------------------------
# what a loss reads: typed batches and hyperparameters
# --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Responses:
    """Per-token tensors of B responses, each (B, T), position t = response token t.

    ``policy_logps`` log f_t (the model being trained), ``prior_logps`` log p_t (frozen;
    None only where a loss never reads it, e.g. SFT without reward logs), ``mask`` (bool)
    the response tokens, ``token_labels`` c_t (float 0/1 or bool), ``step_ids`` the step
    index of each token (integer, -1 outside the response), ``value_logits`` the value
    head's v_t (g_t = sigmoid(v_t)). Which of the optional ones a loss needs, it checks.
    """

    policy_logps: Tensor
    prior_logps: Tensor | None
    mask: Tensor
    token_labels: Tensor | None = None
    step_ids: Tensor | None = None
    value_logits: Tensor | None = None


@dataclass(frozen=True)
class PairedBatch:
    """B pairs: ``chosen`` (correct, (B, T+)) and ``rejected`` (incorrect, (B, T-))
    responses to the same B prompts (DPO, IPO, Step-DPO)."""

    chosen: Responses
    rejected: Responses


@dataclass(frozen=True)
class UnpairedBatch:
    """B responses with their answer labels ``is_correct`` (bool, (B,)); ``mismatched``
    the KTO family's (x_i, y_{i+1}) pairs scored by policy and prior, (B_kl, T_kl)."""

    responses: Responses
    is_correct: Tensor | None = None
    mismatched: Responses | None = None


@dataclass(frozen=True)
class LossParams:
    """Every loss hyperparameter, typed, checked on construction (params: ``align``).

    ``beta`` (> 0) the KL strength of DPO, IPO, KTO and their step versions; ``reduction``
    the token reduction of the per-token losses (SFT, PIPA); ``ipo_normalize`` TRL's length
    normalisation of IPO; ``sft_coef`` (>= 0) and ``sft_reduction`` the added NLL of the
    +SFT variants (Table 4); ``desirable_weight`` / ``undesirable_weight`` (> 0) KTO's
    lambda_D / lambda_U. A loss reads the fields it uses; the others do not change it.
    """

    beta: float = 0.1
    reduction: Reduction = "sum"
    ipo_normalize: bool = False
    sft_coef: float = 1.0
    sft_reduction: Reduction = "mean"
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.0

    def __post_init__(self) -> None:
        def number(value: Any) -> bool:
            return (isinstance(value, (int, float)) and not isinstance(value, bool)
                    and math.isfinite(value))

        if not (number(self.beta) and self.beta > 0):
            raise ValueError(f"LossParams: beta must be a positive number, got {self.beta!r} "
                             "(beta <= 0 trains toward the incorrect answers or not at all)")
        for name in ("reduction", "sft_reduction"):
            _check_reduction("LossParams", getattr(self, name), name)
        if not isinstance(self.ipo_normalize, bool):
            raise TypeError(f"LossParams: ipo_normalize must be true or false, got "
                            f"{self.ipo_normalize!r}")
        if not (number(self.sft_coef) and self.sft_coef >= 0):
            raise ValueError(f"LossParams: sft_coef must be a number >= 0, got "
                             f"{self.sft_coef!r}")
        for name in ("desirable_weight", "undesirable_weight"):
            value = getattr(self, name)
            if not (number(value) and value > 0):
                raise ValueError(f"LossParams: {name} must be a positive number, got "
                                 f"{value!r}")

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> LossParams:
        """``LossParams(**values)``, with an unknown key an error that names it and the
        known ones (a misspelt hyperparameter never falls back to its default)."""
        known = [f.name for f in fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ValueError(f"unknown loss hyperparameter(s) {unknown}; known: "
                             f"{', '.join(known)}")
        return cls(**values)


# --------------------------------------------------------------------------------------
# input checks
# --------------------------------------------------------------------------------------


def _check_2d(fn: str, ref_name: str, ref: Tensor, **others: Tensor | None) -> None:
    """Raise ValueError unless every tensor in ``others`` has the shape of ``ref``."""
    if not isinstance(ref, Tensor):
        raise TypeError(f"{fn}: {ref_name} must be a tensor, got {type(ref).__name__}")
    if ref.dim() != 2:
        raise ValueError(f"{fn}: {ref_name} must be a (B, T) tensor, got {tuple(ref.shape)}")
    for name, t in others.items():
        if t is None:
            continue
        if not isinstance(t, Tensor):
            raise TypeError(f"{fn}: {name} must be a tensor, got {type(t).__name__}")
        if t.shape != ref.shape:
            raise ValueError(
                f"{fn}: {name} has shape {tuple(t.shape)}, expected {tuple(ref.shape)} "
                f"(the shape of {ref_name})"
            )


def _check_mask(fn: str, name: str, mask: Tensor) -> None:
    if mask.dtype != torch.bool:
        raise ValueError(f"{fn}: {name} must be a bool tensor, got dtype {mask.dtype}")


def _check_batch(fn: str, name: str, t: Tensor | None, batch: int) -> None:
    if t is None:
        return
    if not isinstance(t, Tensor):
        raise TypeError(f"{fn}: {name} must be a tensor, got {type(t).__name__}")
    if t.shape != (batch,):
        raise ValueError(f"{fn}: {name} has shape {tuple(t.shape)}, expected ({batch},)")


def _require(fn: str, **tensors: Tensor | None) -> None:
    for name, t in tensors.items():
        if t is None:
            raise ValueError(f"{fn}: missing required input {name!r}")


def _check_reduction(fn: str, reduction: str, name: str = "reduction") -> None:
    if reduction not in ("sum", "mean"):
        raise ValueError(f"{fn}: {name} must be 'sum' or 'mean', got {reduction!r}")


# --------------------------------------------------------------------------------------
# building blocks
# --------------------------------------------------------------------------------------


def _clean(x: Tensor, mask: Tensor) -> Tensor:
    """float32 copy of ``x`` with masked-out positions replaced by 0 (no gradient leaks)."""
    return torch.where(mask, x.float(), torch.zeros((), dtype=torch.float32, device=x.device))


def masked_sum(x: Tensor, mask: Tensor) -> Tensor:
    """(B, T) -> (B,): sum of ``x`` over positions where ``mask`` is True (0 if none)."""
    return _clean(x, mask).sum(-1)


def sequence_reward(policy_logps: Tensor, prior_logps: Tensor, mask: Tensor) -> Tensor:
    """Implicit reward R(S) = sum_{t in S} (log f_t - log p_t), (B, T) -> (B,)."""
    return (_clean(policy_logps, mask) - _clean(prior_logps, mask)).sum(-1)


def _reduce_tokens(per_token: Tensor, mask: Tensor, reduction: str) -> Tensor:
    """(B, T) -> (B,): sum over response tokens, or that sum / number of response tokens."""
    total = _clean(per_token, mask).sum(-1)
    if reduction == "mean":
        total = total / mask.sum(-1).clamp(min=1).to(total.dtype)
    return total


def _batch_mean(x: Tensor, weight: Tensor | None = None) -> Tensor:
    """Mean of ``x`` (B,) over the rows where ``weight`` is True; 0 (with graph) if none."""
    if weight is None:
        weight = torch.ones_like(x, dtype=torch.bool)
    x = torch.where(weight, x, torch.zeros((), dtype=x.dtype, device=x.device))
    return x.sum() / weight.sum().clamp(min=1).to(x.dtype)


def _mean_or_nan(x: Tensor, weight: Tensor) -> Tensor:
    """Detached mean of ``x`` (B,) over rows where ``weight``; NaN when no row qualifies."""
    x = x.detach().float()
    if not bool(weight.any()):
        return torch.tensor(_NAN, dtype=torch.float32, device=x.device)
    return x[weight].mean()


def _reward_logs(reward: Tensor, is_correct: Tensor | None) -> dict[str, Tensor]:
    if is_correct is None:
        nan = torch.tensor(_NAN, dtype=torch.float32, device=reward.device)
        return {"reward_correct": nan, "reward_incorrect": nan.clone()}
    is_correct = is_correct.to(torch.bool)
    return {
        "reward_correct": _mean_or_nan(reward, is_correct),
        "reward_incorrect": _mean_or_nan(reward, ~is_correct),
    }


def _labels(token_labels: Tensor) -> Tensor:
    """Token labels as bool (c_t = 1 where the label is > 0.5)."""
    return token_labels > 0.5 if token_labels.dtype != torch.bool else token_labels


def log1mexp(u: Tensor) -> Tensor:
    """log(1 - exp(u)) for u <= 0, accurate everywhere (Maechler's log1mexp).

    Uses log(-expm1(u)) for u > -log 2 and log1p(-exp(u)) below; both branches are finite
    for u < 0, so neither the value nor the gradient of the unused branch can be NaN.
    """
    near_zero = u > -math.log(2.0)
    safe_near = torch.where(near_zero, u, torch.full_like(u, -1.0))
    safe_far = torch.where(near_zero, torch.full_like(u, -1.0), u)
    return torch.where(
        near_zero, torch.log(-torch.expm1(safe_near)), torch.log1p(-torch.exp(safe_far))
    )


def _sft_term(
    fn: str, policy_logps: Tensor, mask: Tensor, is_correct: Tensor | None, reduction: str
) -> tuple[Tensor, Tensor]:
    """Batch-mean NLL -sum_t log f_t (or per-token mean) over the correct rows; also NLL."""
    nll = -_reduce_tokens(policy_logps, mask, reduction)
    weight = None if is_correct is None else is_correct.to(torch.bool)
    return _batch_mean(nll, weight), nll


# --------------------------------------------------------------------------------------
# SFT
# --------------------------------------------------------------------------------------


def sft_loss(batch: UnpairedBatch, hp: LossParams) -> LossOutput:
    """SFT: L = -sum_t log f_t on correct answers (batch mean over the correct rows).

    Reads ``batch.responses``: ``policy_logps``, ``mask`` (and ``prior_logps``, used only
    for the reward logs), (B, T); ``batch.is_correct`` (B,). Rows with ``is_correct`` False
    are left out (the trainer normally feeds correct answers only, ``correct_only=True``);
    without ``is_correct`` every row counts. ``hp.reduction="mean"`` divides each row's NLL
    by its number of tokens.
    Logs: ``nll`` (mean NLL of the counted rows), ``reward_correct``/``reward_incorrect``
    (NaN without ``prior_logps``).
    """
    fn = "sft_loss"
    y, is_correct = batch.responses, batch.is_correct
    _check_2d(fn, "policy_logps", y.policy_logps, mask=y.mask, prior_logps=y.prior_logps)
    _check_mask(fn, "mask", y.mask)
    _check_batch(fn, "is_correct", is_correct, y.policy_logps.shape[0])
    loss, nll = _sft_term(fn, y.policy_logps, y.mask, is_correct, hp.reduction)
    if y.prior_logps is not None:
        logs = _reward_logs(sequence_reward(y.policy_logps, y.prior_logps, y.mask), is_correct)
    else:
        logs = _reward_logs(nll, None)
    logs["nll"] = loss.detach()
    return loss, logs
