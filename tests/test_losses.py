"""Tests of pipa.losses: every loss against the paper's formulas (issue 4, tests 1-7)."""

from __future__ import annotations

import dataclasses
import math
import typing

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipa import losses as L
from pipa.losses import ALGORITHMS, LossParams, PairedBatch, Responses, UnpairedBatch

SEED = 1234


def _gen(seed: int = SEED) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def _logps(b: int, t: int, g: torch.Generator, lo: float = -3.0) -> torch.Tensor:
    """Random per-token log-probs in [lo, 0)."""
    return torch.rand(b, t, generator=g, dtype=torch.float64) * lo


def _mask(b: int, t: int, g: torch.Generator) -> torch.Tensor:
    """Random right-padded response masks with at least one token per row."""
    lengths = torch.randint(1, t + 1, (b,), generator=g)
    return torch.arange(t)[None, :] < lengths[:, None]


def _unpaired(b: int = 6, t: int = 5, seed: int = SEED) -> dict[str, torch.Tensor]:
    g = _gen(seed)
    mask = _mask(b, t, g)
    is_correct = torch.arange(b) % 2 == 0
    labels = (torch.rand(b, t, generator=g) < 0.5).double()
    labels[is_correct] = 1.0
    return {
        "policy_logps": _logps(b, t, g),
        "prior_logps": _logps(b, t, g),
        "mask": mask,
        "token_labels": labels,
        "is_correct": is_correct,
        "value_logits": torch.randn(b, t, generator=g, dtype=torch.float64) * 2,
        "kl_policy_logps": _logps(b, t, g),
        "kl_prior_logps": _logps(b, t, g),
        "kl_mask": _mask(b, t, g),
        "step_ids": torch.where(mask, torch.arange(t)[None, :] // 2, -1),
    }


def _paired(b: int = 6, t: int = 5, seed: int = SEED) -> dict[str, torch.Tensor]:
    g = _gen(seed)
    return {
        "chosen_policy_logps": _logps(b, t, g),
        "chosen_prior_logps": _logps(b, t, g),
        "chosen_mask": _mask(b, t, g),
        "rejected_policy_logps": _logps(b, t + 1, g),
        "rejected_prior_logps": _logps(b, t + 1, g),
        "rejected_mask": _mask(b, t + 1, g),
        "rejected_token_labels": (torch.rand(b, t + 1, generator=g) < 0.5).double(),
    }


def _seq(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum(-1)


def _close(a: torch.Tensor, b: torch.Tensor | float, tol: float = 1e-5) -> None:
    b = torch.as_tensor(b, dtype=torch.float64)
    assert torch.allclose(a.double(), b, rtol=tol, atol=tol), (a, b)


# --------------------------------------------------------------------------------------
# keyword calls: the tests below spell a batch as flat keywords (``chosen_mask=...``,
# ``kl_policy_logps=...``, ``beta=...``); these pack them into the typed batch and
# hyperparameters the losses take, refusing any keyword they do not use.
# --------------------------------------------------------------------------------------

RESPONSE_FIELDS = ("policy_logps", "prior_logps", "mask", "token_labels", "step_ids",
                   "value_logits")
HP_FIELDS = {f.name for f in dataclasses.fields(LossParams)}


def _side(inputs: dict, prefix: str, used: set) -> Responses:
    keys = [prefix + f for f in RESPONSE_FIELDS if prefix + f in inputs]
    used.update(keys)
    return Responses(**{"prior_logps": None,
                        **{k[len(prefix):]: inputs[k] for k in keys}})


def pack(kind: str, inputs: dict) -> PairedBatch | UnpairedBatch:
    """The typed batch of ``kind`` from flat keywords; keys of the other kind are left."""
    used: set = set()
    if kind == "paired":
        return PairedBatch(_side(inputs, "chosen_", used), _side(inputs, "rejected_", used))
    mismatched = (_side(inputs, "kl_", used) if "kl_policy_logps" in inputs else None)
    responses = _side(inputs, "", used)
    return UnpairedBatch(responses, inputs.get("is_correct"), mismatched)


def _kind(fn) -> str:
    return "paired" if typing.get_type_hints(fn)["batch"] is PairedBatch else "unpaired"


def call(fn, **kw):
    """``fn(batch, hp)`` from flat keywords; an unused keyword is an error."""
    hp = LossParams.from_mapping({k: v for k, v in kw.items() if k in HP_FIELDS})
    tensors = {k: v for k, v in kw.items() if k not in HP_FIELDS}
    kind = _kind(fn)
    prefixes = ("chosen_", "rejected_") if kind == "paired" else ("", "kl_")
    known = {p + f for p in prefixes for f in RESPONSE_FIELDS} | (
        set() if kind == "paired" else {"is_correct"})
    unknown = sorted(set(tensors) - known)
    if unknown:
        raise TypeError(f"{fn.__name__}: unused keywords {unknown}")
    return fn(pack(kind, tensors), hp)


def call_algorithm(spec, inputs: dict, hparams: dict):
    """An algorithm's loss as the trainer calls it: the batch of its data kind."""
    spec = ALGORITHMS[spec] if isinstance(spec, str) else spec
    return spec.loss_fn(pack(spec.data_kind, inputs), LossParams.from_mapping(hparams))


# --------------------------------------------------------------------------------------
# the table and the calling convention
# --------------------------------------------------------------------------------------

EXPECTED_KEYS = {
    "sft", "sft_cont", "dpo", "ipo", "kto", "step_dpo", "step_dpo_l0", "step_kto",
    "step_kto_orig", "pipa_m", "pipa_n", "pipa_m_fixed_g", "pipa_n_fixed_g", "kto_sft",
    "pipa_m_sft", "dpo_sft",
}


def test_table_keys_and_flags() -> None:
    assert set(ALGORITHMS) == EXPECTED_KEYS
    for name, spec in ALGORITHMS.items():
        assert spec.name == name
        assert spec.data_kind in ("paired", "unpaired")
    paired = {n for n, s in ALGORITHMS.items() if s.data_kind == "paired"}
    assert paired == {"dpo", "ipo", "step_dpo", "step_dpo_l0", "dpo_sft"}
    head = {n for n, s in ALGORITHMS.items() if s.needs_value_head}
    assert head == {"pipa_m", "pipa_n", "pipa_m_sft"}
    mism = {n for n, s in ALGORITHMS.items() if s.needs_mismatched}
    assert mism == {"kto", "step_kto", "step_kto_orig", "kto_sft"}
    assert {n for n, s in ALGORITHMS.items() if s.correct_only} == {"sft", "sft_cont"}
    steps = {n for n, s in ALGORITHMS.items() if s.uses_step_labels}
    assert steps == {"step_dpo", "step_dpo_l0", "step_kto", "step_kto_orig"}
    assert ALGORITHMS["step_kto_orig"].needs_step_ids
    assert ALGORITHMS["pipa_m"].display == "PIPA-M"
    assert ALGORITHMS["kto_sft"].display == "KTO+SFT"


def _all_inputs(seed: int = SEED) -> dict[str, torch.Tensor]:
    return {**_unpaired(seed=seed), **_paired(seed=seed)}


HPARAMS = {"beta": 0.1, "reduction": "sum", "ipo_normalize": False, "sft_coef": 1.0}


@pytest.mark.parametrize("name", sorted(EXPECTED_KEYS))
def test_every_loss_takes_its_typed_batch(name: str) -> None:
    loss, logs = call_algorithm(ALGORITHMS[name], _all_inputs(), HPARAMS)
    assert loss.dim() == 0 and torch.isfinite(loss)
    assert "reward_correct" in logs and "reward_incorrect" in logs
    for value in logs.values():
        assert value.dim() == 0 and not value.requires_grad
    if ALGORITHMS[name].needs_value_head or name.startswith("pipa"):
        assert 0.0 < float(logs["value_label_likelihood"]) <= 1.0


def test_an_unknown_or_bad_hyperparameter_is_an_error() -> None:
    with pytest.raises(ValueError, match=r"unknown loss hyperparameter.*'lr'.*known: beta"):
        LossParams.from_mapping({**HPARAMS, "lr": 1e-5})
    with pytest.raises(TypeError):  # the dataclass itself refuses a misspelt field
        LossParams(betta=0.1)
    for bad in ({"beta": 0.0}, {"beta": -1.0}, {"beta": float("nan")}, {"sft_coef": -1.0},
                {"desirable_weight": 0.0}, {"undesirable_weight": float("inf")},
                {"sft_reduction": "avg"}):
        with pytest.raises(ValueError, match=next(iter(bad))):
            LossParams(**bad)
    with pytest.raises(TypeError, match="ipo_normalize"):
        LossParams(ipo_normalize="yes")


MISSING_INPUTS = [  # (algorithm, the inputs it gets, the name its error must say)
    ("kto", lambda: {k: v for k, v in _unpaired().items() if not k.startswith("kl_")},
     "mismatched"),
    ("pipa_n", lambda: {k: v for k, v in _unpaired().items() if k != "value_logits"},
     "value_logits"),
    ("step_kto_orig", lambda: {k: v for k, v in _unpaired().items() if k != "step_ids"},
     "step_ids"),
    ("step_dpo", lambda: {k: v for k, v in _paired().items() if k != "rejected_token_labels"},
     "rejected.token_labels"),
]


@pytest.mark.parametrize("algorithm, inputs, name", MISSING_INPUTS,
                         ids=[m[0] for m in MISSING_INPUTS])
def test_a_missing_input_is_named(algorithm, inputs, name) -> None:
    with pytest.raises(ValueError, match=name):
        call_algorithm(algorithm, inputs(), HPARAMS)


def test_shape_mismatch_names_the_tensor() -> None:
    x = _unpaired()
    with pytest.raises(ValueError, match="prior_logps"):
        call(L.kto_loss, **{**x, "prior_logps": x["prior_logps"][:, :-1]})
    with pytest.raises(ValueError, match="value_logits"):
        call(L.pipa_m_loss, **{**x, "value_logits": x["value_logits"][:-1]})
    with pytest.raises(ValueError, match="is_correct"):
        call(L.pipa_n_loss, **{**x, "is_correct": x["is_correct"][:-1]})
    with pytest.raises(ValueError, match="mask"):
        call(L.sft_loss, **{**x, "mask": x["mask"].float()})
    p = _paired()
    with pytest.raises(ValueError, match="rejected.token_labels"):
        call(L.step_dpo_loss, **{**p, "rejected_token_labels": p["rejected_token_labels"][:, :2]})
    with pytest.raises(ValueError, match="rejected.policy_logps"):
        call(L.dpo_loss, **{**p, "rejected_policy_logps": p["rejected_policy_logps"][:2],
                      "rejected_prior_logps": p["rejected_prior_logps"][:2],
                      "rejected_mask": p["rejected_mask"][:2]})
    with pytest.raises(ValueError, match="reduction"):
        call(L.pipa_m_loss, **x, reduction="avg")


# --------------------------------------------------------------------------------------
# 1. DPO = Theorem A.1
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [1.0, 0.1])
def test_dpo_equals_theorem_a1(beta: float) -> None:
    """-log p(c | x, (y^c, y^-c)) with p(y|x,c=0) = prior, p(c=1|x) = 1/2 (Theorem A.1).

    The beta-scaled DPO is the theorem applied to the tempered positive model
    p(y|x,c=1) proportional to f^beta prior^(1-beta); its normaliser cancels in the ratio.
    """
    p = _paired()
    log_f_pos = _seq(p["chosen_policy_logps"], p["chosen_mask"])
    log_p_pos = _seq(p["chosen_prior_logps"], p["chosen_mask"])
    log_f_neg = _seq(p["rejected_policy_logps"], p["rejected_mask"])
    log_p_neg = _seq(p["rejected_prior_logps"], p["rejected_mask"])

    def cond(log_f: torch.Tensor, log_p: torch.Tensor, c: int) -> torch.Tensor:
        """p(y | x, c): the tempered model for c=1, the prior for c=0 (probability space)."""
        return torch.exp(beta * log_f + (1 - beta) * log_p) if c == 1 else torch.exp(log_p)

    def h(y_c: tuple, y_not_c: tuple, label: int) -> torch.Tensor:
        """h(y^c, y^-c, x, label) = p(y^c | x, label) p(y^-c | x, 1 - label), Appendix A.1."""
        return cond(*y_c, label) * cond(*y_not_c, 1 - label)

    c = [1, 0, 1, 1, 0, 0]  # the sampled label; which of the pair is "y^c" does not matter
    nll = []
    for i, ci in enumerate(c):
        pos = (log_f_pos[i], log_p_pos[i])
        neg = (log_f_neg[i], log_p_neg[i])
        y_c, y_not_c = (pos, neg) if ci == 1 else (neg, pos)
        # Bayes with p(c=1|x) = p(c=0|x) = 1/2
        num = h(y_c, y_not_c, ci) * 0.5
        prob = num / (num + h(y_c, y_not_c, 1 - ci) * 0.5)
        nll.append(-torch.log(prob))
    loss, logs = call(L.dpo_loss, **p, beta=beta)
    _close(loss, torch.stack(nll).mean())
    r_pos, r_neg = log_f_pos - log_p_pos, log_f_neg - log_p_neg
    _close(logs["reward_accuracy"], (r_pos > r_neg).double().mean())
    _close(logs["reward_correct"], r_pos.mean())
    _close(logs["reward_incorrect"], r_neg.mean())


# --------------------------------------------------------------------------------------
# 2. KTO = Theorem A.2
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("beta", [1.0, 0.1])
@pytest.mark.parametrize("kl_shift", [0.0, -5.0])
def test_kto_equals_theorem_a2(beta: float, kl_shift: float) -> None:
    """KTO's loss = 1 - E p(c | x, y) with p(y|x,c=0) = prior and
    log p(c=0|x)/p(c=1|x) = z (Theorem A.2), z = max(0, mean R_kl) from the mismatched pairs;
    kl_shift=-5 makes mean R_kl negative, so the clamp sets z = 0."""
    x = _unpaired()
    x["kl_policy_logps"] = x["kl_policy_logps"] + kl_shift * 0.2
    r_kl = _seq(x["kl_policy_logps"] - x["kl_prior_logps"], x["kl_mask"])
    z = max(0.0, float(r_kl.mean()))
    if kl_shift < 0:
        assert float(r_kl.mean()) < 0 and z == 0.0
    log_f = beta * _seq(x["policy_logps"], x["mask"]) + (1 - beta) * _seq(
        x["prior_logps"], x["mask"]
    )
    log_p = _seq(x["prior_logps"], x["mask"])
    # p(c=1 | x, y) = f g / (f g + prior (1 - g)) with (1 - g)/g = e^z
    g1 = 1.0 / (1.0 + math.exp(z))
    p1 = torch.exp(log_f) * g1 / (torch.exp(log_f) * g1 + torch.exp(log_p) * (1 - g1))
    p_c = torch.where(x["is_correct"], p1, 1 - p1)
    loss, logs = call(L.kto_loss, **x, beta=beta)
    _close(loss, (1 - p_c).mean())
    _close(logs["z0"], z)
    _close(logs["reward_correct"], (_seq(x["policy_logps"] - x["prior_logps"], x["mask"])
                                    [x["is_correct"]]).mean())


def test_kto_z0_is_detached() -> None:
    x = _unpaired()
    x["policy_logps"].requires_grad_(True)
    x["kl_policy_logps"].requires_grad_(True)
    loss, _ = call(L.kto_loss, **x)
    loss.backward()
    assert x["kl_policy_logps"].grad is None
    assert x["policy_logps"].grad is not None


# --------------------------------------------------------------------------------------
# 3. Step-DPO L1 / L0 and Step-KTO L1: stop-gradient on the positive steps of y-
# --------------------------------------------------------------------------------------


def test_step_dpo_l1_stops_gradient_but_keeps_value() -> None:
    p = _paired()
    p["rejected_token_labels"][:, 0] = 1.0  # at least one positive and one negative token
    p["rejected_token_labels"][:, 1] = 0.0
    p["rejected_mask"][:, :2] = True
    rej = p["rejected_policy_logps"].clone().requires_grad_(True)
    loss, _ = call(L.step_dpo_loss, **{**p, "rejected_policy_logps": rej}, beta=0.5)
    loss.backward()
    pos = (p["rejected_token_labels"] > 0.5) & p["rejected_mask"]
    neg = (p["rejected_token_labels"] < 0.5) & p["rejected_mask"]
    assert torch.all(rej.grad[pos] == 0.0)
    assert torch.all(rej.grad[neg] != 0.0)
    # forward value: equals DPO's, and moving the positive steps changes it
    dpo, _ = call(L.dpo_loss, **p, beta=0.5)
    _close(loss, dpo)
    moved = torch.where(pos, p["rejected_policy_logps"] - 1.0, p["rejected_policy_logps"])
    l1_moved, _ = call(L.step_dpo_loss, **{**p, "rejected_policy_logps": moved}, beta=0.5)
    assert float(l1_moved) < float(loss.detach()) - 1e-4
    # L0: the positive steps leave the value and the gradient
    l0, _ = call(L.step_dpo_l0_loss, **p, beta=0.5)
    l0_moved, _ = call(L.step_dpo_l0_loss, **{**p, "rejected_policy_logps": moved}, beta=0.5)
    _close(l0, l0_moved, tol=1e-7)
    r_pos = _seq(p["chosen_policy_logps"] - p["chosen_prior_logps"], p["chosen_mask"])
    r_neg0 = _seq(p["rejected_policy_logps"] - p["rejected_prior_logps"], neg)
    _close(l0, -torch.nn.functional.logsigmoid(0.5 * (r_pos - r_neg0)).mean())
    assert abs(float(l0) - float(loss.detach())) > 1e-4


def test_step_kto_l1_stops_gradient_but_keeps_value() -> None:
    x = _unpaired()
    x["mask"][:, :2] = True
    x["token_labels"][~x["is_correct"], 0] = 1.0
    x["token_labels"][~x["is_correct"], 1] = 0.0
    pol = x["policy_logps"].clone().requires_grad_(True)
    loss, _ = call(L.step_kto_loss, **{**x, "policy_logps": pol}, beta=0.5)
    loss.backward()
    incorrect_pos = (~x["is_correct"])[:, None] & (x["token_labels"] > 0.5) & x["mask"]
    others = x["mask"] & ~incorrect_pos
    assert incorrect_pos.any()
    assert torch.all(pol.grad[incorrect_pos] == 0.0)
    assert torch.all(pol.grad[others] != 0.0)
    kto, _ = call(L.kto_loss, **x, beta=0.5)
    _close(loss, kto)  # same forward value as KTO
    moved = torch.where(incorrect_pos, x["policy_logps"] + 1.0, x["policy_logps"])
    l1_moved, _ = call(L.step_kto_loss, **{**x, "policy_logps": moved}, beta=0.5)
    assert float(l1_moved) > float(loss.detach()) + 1e-5


def test_step_kto_orig_hand_case_and_single_step_is_kto() -> None:
    # one incorrect row, steps [0, 0, 1], labels [1, 1, 0], r_t = [1, 0.5, -1], z0 = 0, beta=1
    pol = torch.tensor([[1.0, 0.5, -1.0]]) - 2.0
    x = {
        "policy_logps": pol, "prior_logps": torch.full((1, 3), -2.0),
        "mask": torch.ones(1, 3, dtype=torch.bool), "token_labels": torch.tensor([[1.0, 1, 0]]),
        "step_ids": torch.tensor([[0, 0, 1]]), "is_correct": torch.tensor([False]),
        "kl_policy_logps": torch.full((1, 2), -1.0), "kl_prior_logps": torch.full((1, 2), -1.0),
        "kl_mask": torch.ones(1, 2, dtype=torch.bool),
    }
    loss, _ = call(L.step_kto_orig_loss, **x, beta=1.0)
    # step 0: R = 1.5, desirable: 1 - s(1.5) ; step 1: R = -1, undesirable: 1 - s(0 - (-1))
    expected = (1 - 1 / (1 + math.exp(-1.5))) + (1 - 1 / (1 + math.exp(-1.0)))
    _close(loss, expected)
    # every answer one single step carrying the answer label: Lin et al.'s loss is KTO
    y = _unpaired()
    y["token_labels"] = y["is_correct"].double()[:, None].expand_as(y["mask"]).clone()
    y["step_ids"] = torch.where(y["mask"], 0, -1)
    orig, _ = call(L.step_kto_orig_loss, **y, beta=0.3)
    kto, _ = call(L.kto_loss, **y, beta=0.3)
    _close(orig, kto)


# --------------------------------------------------------------------------------------
# 4. PIPA-N = direct tau formula; PIPA-M clip
# --------------------------------------------------------------------------------------


def _direct_token_terms(x: dict[str, torch.Tensor], variant: str) -> torch.Tensor:
    """-log p(c_t | x, y<=t) straight from Algorithm 1, in probability space (float64)."""
    f, p = torch.exp(x["policy_logps"]), torch.exp(x["prior_logps"])
    g = torch.sigmoid(x["value_logits"])
    if variant == "m":
        big_f = f * g / p
    else:
        ratio = f * g / (p * (1 - g))
        big_f = ratio / (ratio + 1)  # tau
    c = x["token_labels"]
    return -(c * torch.log(big_f) + (1 - c) * torch.log(1 - big_f))


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_pipa_n_equals_direct_tau_formula(reduction: str) -> None:
    x = _unpaired()
    terms = _direct_token_terms(x, "n")
    per_row = _seq(terms, x["mask"])
    if reduction == "mean":
        per_row = per_row / x["mask"].sum(-1)
    loss, _ = call(L.pipa_n_loss, **x, reduction=reduction)
    _close(loss, per_row.mean())


def test_pipa_m_equals_direct_formula_below_clip() -> None:
    x = _unpaired()
    x["prior_logps"] = x["policy_logps"] + 0.2  # f g / p = g e^-0.2 < 1: the clip is inactive
    loss, _ = call(L.pipa_m_loss, **x)
    _close(loss, _seq(_direct_token_terms(x, "m"), x["mask"]).mean())


def test_pipa_m_clip_keeps_f_below_one_with_finite_zero_gradient() -> None:
    log_f = torch.tensor([[0.0, -1e-3, -1.0, -1e4]], dtype=torch.float64)
    log_p = torch.tensor([[-1e4, -5.0, -0.5, -5.0]], dtype=torch.float64)
    v = torch.tensor([[50.0, 3.0, 0.0, 50.0]], dtype=torch.float64)
    log_big_f, log_1m = L.pipa_log_probs("m", log_f.float(), log_p.float(), v.float())
    assert torch.all(torch.exp(log_big_f.double()) <= 1 - 1e-6 + 1e-12)
    assert torch.all(torch.isfinite(log_1m)) and torch.all(log_1m >= math.log(1e-6) - 0.1)
    for labels in (torch.ones(1, 4), torch.zeros(1, 4)):
        pol = log_f.clone().requires_grad_(True)
        val = v.clone().requires_grad_(True)
        loss, _ = call(L.pipa_m_loss, policy_logps=pol, prior_logps=log_p, value_logits=val,
                                mask=torch.ones(1, 4, dtype=torch.bool), token_labels=labels)
        loss.backward()
        assert torch.isfinite(loss)
        assert torch.all(torch.isfinite(pol.grad)) and torch.all(torch.isfinite(val.grad))
        clipped = torch.tensor([[True, True, False, False]])  # first two: f g / p >> 1
        assert torch.all(pol.grad[clipped] == 0.0) and torch.all(val.grad[clipped] == 0.0)
        assert torch.all(pol.grad[0, 2] != 0.0)  # unclipped: the gradient flows


def test_log1mexp_accurate_in_float32() -> None:
    """log(1 - e^u) in float32 matches a float64 reference (accurate branch per range:
    -expm1 near 0, log1p(-exp) far from 0) to float32 precision, where the naive
    float32 log1p(-exp(u)) is badly off near u = 0."""
    u = [-1e-7, -1e-6, -1e-3, -0.5, -0.7, -1.0, -30.0, -1e4]
    ref = torch.tensor([math.log(-math.expm1(a)) if a > -0.69 else math.log1p(-math.exp(a))
                        for a in u], dtype=torch.float64)
    got = L.log1mexp(torch.tensor(u, dtype=torch.float32)).double()
    assert torch.allclose(got, ref, rtol=1e-6, atol=1e-30)
    naive = torch.log1p(-torch.exp(torch.tensor(u[:1], dtype=torch.float32))).double()
    assert abs(float(naive[0] - ref[0])) > 1e-2


# --------------------------------------------------------------------------------------
# 5. answer-level PIPA; g fixed at 0.5
# --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["pipa_m", "pipa_n"])
def test_answer_level_pipa_is_token_level_with_equal_labels(name: str) -> None:
    x = _unpaired()
    x["prior_logps"] = x["policy_logps"] + 0.3  # keep PIPA-M below its clip
    fn = ALGORITHMS[name].loss_fn
    no_labels = {k: v for k, v in x.items() if k != "token_labels"}
    answer, logs_a = call(fn, **no_labels)
    broadcast = x["is_correct"].double()[:, None].expand_as(x["mask"])
    token, logs_t = call(fn, **{**x, "token_labels": broadcast})
    _close(answer, token, tol=1e-7)
    _close(logs_a["value_label_likelihood"], logs_t["value_label_likelihood"], tol=1e-7)
    mixed, _ = call(fn, **x)
    assert abs(float(mixed) - float(answer)) > 1e-4  # the step labels do matter
    # reference: the answer-level objective, -log p(c | x, y) = -sum_t log p(c | x, y<=t)
    # with every c_t = c (Section 2.5's factorisation of p(c | x, y))
    ref = _seq(_direct_token_terms({**x, "token_labels": broadcast}, name[-1]), x["mask"])
    _close(answer, ref.mean())
    if name == "pipa_m":
        # correct answers: eq. (5) with f(y), p(y) the sequence probabilities and
        # g(x) = prod_t g_t: -log(f(y) g / p(y))
        ok = x["is_correct"]
        seq_ll = _seq(x["policy_logps"] - x["prior_logps"]
                      + torch.nn.functional.logsigmoid(x["value_logits"]), x["mask"])
        only_correct, _ = call(fn, **{k: v[ok] for k, v in no_labels.items() if not k.startswith("kl")})
        _close(only_correct, (-seq_ll[ok]).mean())


@pytest.mark.parametrize("name", ["pipa_m_fixed_g", "pipa_n_fixed_g"])
def test_fixed_g_removes_the_head_from_the_graph(name: str) -> None:
    from pipa.value_head import ValueHead

    torch.manual_seed(0)
    x = _unpaired()
    head = ValueHead(8)
    hidden = torch.randn(*x["mask"].shape, 8)
    x["value_logits"] = head(hidden)
    x["policy_logps"].requires_grad_(True)
    spec = ALGORITHMS[name]
    assert not spec.needs_value_head
    loss, logs = call_algorithm(spec, x, HPARAMS)
    loss.backward()
    assert x["policy_logps"].grad is not None
    assert all(p.grad is None for p in head.parameters())
    _close(logs["value_label_likelihood"], 0.5)
    # identical to the full loss with v_t = 0 (g_t = 0.5)
    full = {"pipa_m_fixed_g": L.pipa_m_loss, "pipa_n_fixed_g": L.pipa_n_loss}[name]
    ref, _ = call(full, **{**x, "value_logits": torch.zeros_like(x["mask"], dtype=torch.float64)})
    _close(loss.detach(), ref.detach())


def test_pipa_value_label_likelihood_and_rewards() -> None:
    x = _unpaired()
    _, logs = call(L.pipa_m_loss, **x)
    c = x["token_labels"]
    ll = c * torch.nn.functional.logsigmoid(x["value_logits"]) + (1 - c) * (
        torch.nn.functional.logsigmoid(-x["value_logits"])
    )
    _close(logs["value_label_likelihood"], torch.exp(_seq(ll, x["mask"]).sum() / x["mask"].sum()))
    r = _seq(x["policy_logps"] - x["prior_logps"], x["mask"])
    _close(logs["reward_correct"], r[x["is_correct"]].mean())
    _close(logs["reward_incorrect"], r[~x["is_correct"]].mean())
    only_correct = {k: v[x["is_correct"]] for k, v in x.items() if not k.startswith("kl")}
    _, logs = call(L.pipa_n_loss, **only_correct)
    assert math.isnan(float(logs["reward_incorrect"]))


def test_reduction_mean_divides_by_response_length() -> None:
    x = _unpaired()
    terms = _seq(_direct_token_terms(x, "n"), x["mask"])
    s, _ = call(L.pipa_n_loss, **x, reduction="sum")
    m, _ = call(L.pipa_n_loss, **x, reduction="mean")
    _close(s, terms.mean())
    _close(m, (terms / x["mask"].sum(-1)).mean())


def test_added_sft_terms() -> None:
    x = _unpaired()
    ok = x["is_correct"]
    nll_mean = (-_seq(x["policy_logps"], x["mask"]) / x["mask"].sum(-1))[ok].mean()
    kto, _ = call(L.kto_loss, **x)
    kto_sft, logs = call(L.kto_sft_loss, **x, sft_coef=0.7)
    _close(kto_sft, kto + 0.7 * nll_mean)
    _close(logs["sft_nll"], nll_mean)
    pm, _ = call(L.pipa_m_loss, **x)
    pm_sft, _ = call(L.pipa_m_sft_loss, **x, sft_coef=1.0)
    _close(pm_sft, pm + nll_mean)

    nll_sum = (-_seq(x["policy_logps"], x["mask"]))[ok].mean()
    pm_sum, _ = call(L.pipa_m_sft_loss, **x, sft_coef=2.0, sft_reduction="sum")
    _close(pm_sum, pm + 2.0 * nll_sum)


# --------------------------------------------------------------------------------------
# 6. extreme inputs: finite losses and gradients (hypothesis)
# --------------------------------------------------------------------------------------

POISON = [float("-inf"), float("inf"), float("nan"), 1e30, -1e30]
LOGP = st.one_of(st.sampled_from([0.0, -1e-8, -1e-3, -1e4]),
                 st.floats(min_value=-1e4, max_value=0.0, allow_nan=False))
VLOGIT = st.one_of(st.sampled_from([-50.0, 50.0, 0.0]),
                   st.floats(min_value=-50.0, max_value=50.0, allow_nan=False))


def test_dpo_sft_adds_the_chosen_answers_nll_to_dpo() -> None:
    """Every chosen row counts (they are the correct answers); the rejected never do."""
    x = {k: v for k, v in _paired().items() if k != "rejected_token_labels"}
    chosen_nll = (-_seq(x["chosen_policy_logps"], x["chosen_mask"])
                  / x["chosen_mask"].sum(-1)).mean()
    dpo, dpo_logs = call(L.dpo_loss, **x)
    both, logs = call(L.dpo_sft_loss, **x, sft_coef=0.7)
    _close(both, dpo + 0.7 * chosen_nll)
    _close(logs["sft_nll"], chosen_nll)
    _close(logs["reward_margin"], dpo_logs["reward_margin"])
    summed, _ = call(L.dpo_sft_loss, **x, sft_coef=1.0, sft_reduction="sum")
    _close(summed, dpo - _seq(x["chosen_policy_logps"], x["chosen_mask"]).mean())


def _tensor(draw: st.DrawFn, shape: tuple[int, int], elems: st.SearchStrategy,
            mask: torch.Tensor) -> torch.Tensor:
    vals = draw(st.lists(elems, min_size=shape[0] * shape[1], max_size=shape[0] * shape[1]))
    x = torch.tensor(vals, dtype=torch.float32).reshape(shape)
    poison = torch.tensor(draw(st.sampled_from(POISON)))
    return torch.where(mask, x, poison).requires_grad_(True)


@st.composite
def _batch(draw: st.DrawFn) -> dict[str, torch.Tensor]:
    b = draw(st.integers(min_value=1, max_value=3))
    out: dict[str, torch.Tensor] = {}

    def block(prefix: str) -> tuple[int, torch.Tensor]:
        t = draw(st.integers(min_value=1, max_value=4))
        mask = torch.tensor(draw(st.lists(st.lists(st.booleans(), min_size=t, max_size=t),
                                          min_size=b, max_size=b)), dtype=torch.bool)
        out[f"{prefix}mask"] = mask
        out[f"{prefix}policy_logps"] = _tensor(draw, (b, t), LOGP, mask)
        out[f"{prefix}prior_logps"] = _tensor(draw, (b, t), LOGP, mask)
        return t, mask

    t, mask = block("")
    out["value_logits"] = _tensor(draw, (b, t), VLOGIT, mask)
    labels = draw(st.lists(st.booleans(), min_size=b * t, max_size=b * t))
    out["token_labels"] = torch.tensor(labels, dtype=torch.float32).reshape(b, t)
    starts = torch.tensor(draw(st.lists(st.booleans(), min_size=b * t, max_size=b * t)))
    starts = starts.reshape(b, t) & mask
    out["step_ids"] = torch.where(mask, (starts.long().cumsum(-1)), -1)
    out["is_correct"] = torch.tensor(draw(st.lists(st.booleans(), min_size=b, max_size=b)))
    block("kl_")
    block("chosen_")
    t_rej, _ = block("rejected_")
    labels = draw(st.lists(st.booleans(), min_size=b * t_rej, max_size=b * t_rej))
    out["rejected_token_labels"] = torch.tensor(labels, dtype=torch.float32).reshape(b, t_rej)
    return out


@pytest.mark.parametrize("name", sorted(EXPECTED_KEYS))
@settings(max_examples=30, deadline=None, derandomize=True,
          suppress_health_check=[HealthCheck.too_slow])
@given(batch=_batch(), reduction=st.sampled_from(["sum", "mean"]),
       normalize=st.booleans(), beta=st.sampled_from([0.1, 1.0, 10.0]))
def test_extreme_inputs_finite(name: str, batch: dict, reduction: str, normalize: bool,
                               beta: float) -> None:
    hp = {"beta": beta, "reduction": reduction, "ipo_normalize": normalize, "sft_coef": 1.0}
    loss, logs = call_algorithm(ALGORITHMS[name], batch, hp)
    assert torch.isfinite(loss), (name, loss)
    loss.backward()
    for key, t in batch.items():
        if isinstance(t, torch.Tensor) and t.grad is not None:
            assert torch.all(torch.isfinite(t.grad)), (name, key, t.grad)
            prefix = next((p for p in ("chosen_", "rejected_", "kl_") if key.startswith(p)), "")
            mask_key = prefix + "mask"
            if key.endswith("logps") or key == "value_logits":
                assert torch.all(t.grad[~batch[mask_key]] == 0), (name, key)
    for key, value in logs.items():
        assert not torch.isinf(value), (name, key)


@pytest.mark.parametrize("name", sorted(EXPECTED_KEYS))
def test_empty_and_length_one(name: str) -> None:
    for t, fill in ((1, True), (3, False)):
        batch = _all_inputs()
        for key in list(batch):
            value = batch[key]
            batch[key] = value[:2, :t].clone() if value.dim() == 2 else value[:2].clone()
            if key.endswith("mask"):
                batch[key][:] = fill
            elif batch[key].is_floating_point():
                batch[key].requires_grad_(True)
        batch["step_ids"] = torch.where(batch["mask"], 0, -1)
        loss, _ = call_algorithm(ALGORITHMS[name], batch, HPARAMS)
        assert torch.isfinite(loss)
        loss.backward()
        for value in batch.values():
            if value.grad is not None:
                assert torch.all(torch.isfinite(value.grad))


# --------------------------------------------------------------------------------------
# 7. hand-computed cases
# --------------------------------------------------------------------------------------


def _hand_pair() -> dict[str, torch.Tensor]:
    """y+: two tokens, r = (-1) - (-2) = 1 each, R(y+) = 2.
    y-: one token, r = (-3) - (-2) = -1, R(y-) = -1 (the padding slot is masked out)."""
    return {
        "chosen_policy_logps": torch.tensor([[-1.0, -1.0]]),
        "chosen_prior_logps": torch.tensor([[-2.0, -2.0]]),
        "chosen_mask": torch.tensor([[True, True]]),
        "rejected_policy_logps": torch.tensor([[-3.0, 99.0]]),
        "rejected_prior_logps": torch.tensor([[-2.0, float("-inf")]]),
        "rejected_mask": torch.tensor([[True, False]]),
    }


def test_dpo_hand_case() -> None:
    # beta = 1: -log sigmoid(2 - (-1)) = log(1 + e^-3) = 0.048587...
    loss, logs = call(L.dpo_loss, **_hand_pair(), beta=1.0)
    _close(loss, 0.04858735157374196)
    # beta = 0.1: log(1 + e^-0.3) = 0.554355...
    loss, _ = call(L.dpo_loss, **_hand_pair(), beta=0.1)
    _close(loss, 0.5543552444685272)
    _close(logs["reward_correct"], 2.0)
    _close(logs["reward_incorrect"], -1.0)
    _close(logs["reward_accuracy"], 1.0)


def test_ipo_hand_cases() -> None:
    # beta = 0.1, 1/(2 beta) = 5.
    # sum (OpenRLHF): h = 2 - (-1) = 3, (3 - 5)^2 = 4
    loss, _ = call(L.ipo_loss, **_hand_pair(), beta=0.1, ipo_normalize=False)
    _close(loss, 4.0)
    # length-normalised (TRL): h = 2/2 - (-1)/1 = 2, (2 - 5)^2 = 9
    loss, _ = call(L.ipo_loss, **_hand_pair(), beta=0.1, ipo_normalize=True)
    _close(loss, 9.0)


def test_kto_hand_case() -> None:
    # mismatched pairs: R_kl = 0.5 and 1.5, z0 = mean = 1.
    # desirable y (R = 3):   1 - sigmoid(1 * (3 - 1)) = 1 - 0.880797 = 0.119203
    # undesirable y (R = -1): 1 - sigmoid(1 * (1 - (-1))) = 0.119203 ; mean 0.119203
    x = {
        "policy_logps": torch.tensor([[1.0, 2.0], [-1.0, 0.0]]) - 5.0,
        "prior_logps": torch.full((2, 2), -5.0),
        "mask": torch.tensor([[True, True], [True, False]]),
        "is_correct": torch.tensor([True, False]),
        "kl_policy_logps": torch.tensor([[-1.5], [-0.5]]),
        "kl_prior_logps": torch.tensor([[-2.0], [-2.0]]),
        "kl_mask": torch.ones(2, 1, dtype=torch.bool),
    }
    sig2 = 1 / (1 + math.exp(-2.0))
    loss, logs = call(L.kto_loss, **x, beta=1.0)
    _close(loss, 1 - sig2)
    _close(logs["z0"], 1.0)
    _close(logs["reward_correct"], 3.0)
    _close(logs["reward_incorrect"], -1.0)
    # R_kl = -0.5 and -1.5: the mean is negative, z0 = 0:
    # desirable 1 - sigmoid(3) = 0.047426, undesirable 1 - sigmoid(1) = 0.268941
    x["kl_policy_logps"] = torch.tensor([[-2.5], [-3.5]])
    loss, logs = call(L.kto_loss, **x, beta=1.0)
    _close(logs["z0"], 0.0)
    _close(loss, ((1 - 1 / (1 + math.exp(-3))) + (1 - 1 / (1 + math.exp(-1)))) / 2)


def test_sft_and_pipa_hand_cases() -> None:
    # SFT: the correct row has log f = (-1, -2): NLL 3 ("sum") or 1.5 ("mean");
    # the incorrect row is left out.
    x = {
        "policy_logps": torch.tensor([[-1.0, -2.0], [-7.0, -7.0]]),
        "mask": torch.ones(2, 2, dtype=torch.bool),
        "is_correct": torch.tensor([True, False]),
    }
    _close(call(L.sft_loss, **x)[0], 3.0)
    _close(call(L.sft_loss, **x, reduction="mean")[0], 1.5)
    # PIPA, one token with f = p and v = 0 (g = 1/2): PIPA-M F = f g / p = 1/2,
    # PIPA-N F = tau(1) = 1/2; either label gives -log(1/2) = log 2.
    one = {"policy_logps": torch.tensor([[-0.7]]), "prior_logps": torch.tensor([[-0.7]]),
           "mask": torch.ones(1, 1, dtype=torch.bool), "value_logits": torch.zeros(1, 1)}
    for fn in (L.pipa_m_loss, L.pipa_n_loss):
        for c in (0.0, 1.0):
            _close(call(fn, **one, token_labels=torch.tensor([[c]]))[0], math.log(2.0))
    # PIPA-M with f = 1/2, p = 1, g = 1/2: F = 1/4; c=1: log 4, c=0: -log(3/4) = 0.287682
    one = {**one, "policy_logps": torch.tensor([[math.log(0.5)]]),
           "prior_logps": torch.zeros(1, 1)}
    _close(call(L.pipa_m_loss, **one, token_labels=torch.ones(1, 1))[0], math.log(4.0))
    _close(call(L.pipa_m_loss, **one, token_labels=torch.zeros(1, 1))[0], -math.log(0.75))
    # PIPA-N: f g / (p (1 - g)) = 1/2, F = tau(1/2) = 1/3; c=1: log 3, c=0: log 1.5
    _close(call(L.pipa_n_loss, **one, token_labels=torch.ones(1, 1))[0], math.log(3.0))
    _close(call(L.pipa_n_loss, **one, token_labels=torch.zeros(1, 1))[0], math.log(1.5))


@pytest.mark.parametrize("variant", ["m", "n"])
def test_pipa_log_ratio_is_taken_first_so_float32_keeps_its_digits(variant) -> None:
    """Near F -> 1 (v large) with |log p| >= 10, PIPA's gradients in float32 match a float64
    reference to 1e-3: r = log f - log p is computed before log g is added. The old order,
    (log f + log g) - log p, put PIPA-M's value-logit gradient about 7% off here."""
    log_p = torch.tensor([[-10.0, -12.0, -25.0, -10.0]], dtype=torch.float64)
    log_f = log_p + torch.tensor([[0.0, 1e-4, -2e-4, 0.0]], dtype=torch.float64)
    v = torch.tensor([[12.0, 11.0, 9.0, 13.0]], dtype=torch.float64)
    mask = torch.ones(1, 4, dtype=torch.bool)
    loss_fn = L.pipa_m_loss if variant == "m" else L.pipa_n_loss
    grads = {}
    for dtype in (torch.float32, torch.float64):
        pol = log_f.to(dtype).requires_grad_(True)
        val = v.to(dtype).requires_grad_(True)
        loss, _ = call(loss_fn, policy_logps=pol, prior_logps=log_p.to(dtype), value_logits=val,
                       mask=mask, token_labels=torch.zeros(1, 4))
        loss.backward()
        grads[dtype] = (val.grad.double(), pol.grad.double())
    for g32, g64 in zip(grads[torch.float32], grads[torch.float64]):
        assert torch.allclose(g32, g64, rtol=1e-3, atol=0), (g32, g64)
    if variant == "n":  # a_t = r_t + v_t exactly: log(1 - F) is logsigmoid(-(r + v))
        r = (log_f - log_p).float()
        _, log_1m = L.pipa_log_probs("n", log_f.float(), log_p.float(), v.float())
        assert torch.equal(log_1m, torch.nn.functional.logsigmoid(-(r + v.float())))


def test_kto_weights_scale_the_desirable_and_undesirable_terms() -> None:
    """TRL's desirable_weight / undesirable_weight: each term of the batch mean is scaled by
    the weight of its kind; 1 and 1 is the plain KTO of the paper, bit for bit."""
    x = _unpaired()
    plain, _ = call(L.kto_loss, **x)
    same, _ = call(L.kto_loss, **x, desirable_weight=1.0, undesirable_weight=1.0)
    assert torch.equal(plain, same)
    assert bool(x["is_correct"].any()) and bool((~x["is_correct"]).any())
    only_d, _ = call(L.kto_loss, **x, desirable_weight=1.0, undesirable_weight=1e-30)
    only_u, _ = call(L.kto_loss, **x, desirable_weight=1e-30, undesirable_weight=1.0)
    _close(only_d + only_u, plain)
    weighted, _ = call(L.kto_loss, **x, desirable_weight=1.33, undesirable_weight=0.5)
    _close(weighted, 1.33 * only_d + 0.5 * only_u)
    for algorithm in ("step_kto", "step_kto_orig"):  # pure KTO terms: both weights scale all
        fn = L.ALGORITHMS[algorithm].loss_fn
        a, _ = call(fn, **x)
        b, _ = call(fn, **x, desirable_weight=2.0, undesirable_weight=2.0)
        _close(b, 2 * a)
    kto_sft, _ = call(L.kto_sft_loss, **x, sft_coef=0.0, desirable_weight=1.33, undesirable_weight=0.5)
    _close(kto_sft, weighted)
    with pytest.raises(ValueError, match="desirable_weight must be a positive number"):
        call(L.kto_loss, **x, desirable_weight=0.0)


def test_a_kto_micro_batch_of_one_sequence_is_refused_naming_the_fix() -> None:
    """Its mismatched pair (x_1, y_2) would be the matched (x_1, y_1): TRL refuses it too."""
    from pipa.batching import Example, mismatched
    from pipa.config import ConfigError

    one = Example(rid="a", sid="a", prompt_ids=[1], response_ids=[2], token_labels=[1.0],
                  step_ids=[0], correct=True)
    with pytest.raises(ConfigError, match=r"at least 2 sequences per micro-batch, got 1: "
                                          r"raise align.batch_size or lower align.grad_accum"):
        mismatched([one])
    assert [e.sid for e in mismatched([one, one])] == ["a~a", "a~a"]
