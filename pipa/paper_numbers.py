"""The paper's published numbers (SPEC.md, Tables 1-4) as data, and display names.

Accuracies are in percent. Keys use this project's vocabulary:

* models: ``"ds"`` (Deepseek-Math-7B-Instruct) and ``"qw"`` (Qwen2.5-Math-7B-Instruct);
* benchmarks: ``"gsm"`` is the paper's GSM8K column, ``"math"`` its MATH column (the report
  maps the first two benchmark keys of the metrics files onto these two);
* algorithms: the names used in ``params.yaml``.

The paper reports neither the SFT model's own accuracy nor a continued-SFT control, so
those rows have no paper number (``paper_table1`` returns ``None``).
"""

from __future__ import annotations

from pipa import registry

PAPER_MODELS = ("ds", "qw")
PAPER_BENCHMARKS = ("gsm", "math")  # GSM8K, MATH
PAPER_BENCHMARK_NAMES = {"gsm": "GSM8K", "math": "MATH"}

# Row names of Tables 2-4, by ablation name in params.yaml `ablations`.
ABLATION_DISPLAY = {
    "fixed_g_m": "PIPA-M (g=0.5)",
    "fixed_g_n": "PIPA-N (g=0.5)",
    "prior_all_m": "PIPA-M(T)",  # prior fine-tuned on all samples, p(y|x)
    "prior_incorrect_n": "PIPA-N(T)",  # prior fine-tuned on incorrect samples, p(y|x,c=0)
    "kto_sft": "KTO+SFT",
    "pipa_m_sft": "PIPA-M+SFT",
}

PIPA_ALGORITHMS = registry.PIPA_ALGORITHMS
# Figure 4: the paired baselines whose implicit reward of correct answers the paper plots,
# and where it goes during training.
FIGURE4_CORRECT_REWARD = {"dpo": "falls", "step_dpo": "rises"}


def _row(gsm_ds: float, gsm_qw: float, math_ds: float, math_qw: float):
    return {("ds", "gsm"): gsm_ds, ("qw", "gsm"): gsm_qw,
            ("ds", "math"): math_ds, ("qw", "math"): math_qw}


# Table 1: (data, labels, algorithm) -> {(model, benchmark): accuracy %}.
# Columns in SPEC.md order: GSM8K DS, GSM8K QW, MATH DS, MATH QW.
TABLE1: dict[tuple[str, str, str], dict[tuple[str, str], float]] = {
    ("paired", "answer", "dpo"): _row(68.39, 67.17, 46.94, 47.78),
    ("paired", "answer", "ipo"): _row(69.14, 72.33, 46.94, 49.96),
    ("paired", "answer", "kto"): _row(76.72, 62.47, 47.38, 46.53),
    ("paired", "answer", "pipa_m"): _row(79.08, 73.77, 50.82, 51.60),
    ("paired", "answer", "pipa_n"): _row(80.29, 70.89, 52.32, 47.26),
    ("paired", "step", "step_dpo"): _row(68.54, 66.11, 46.96, 48.38),
    ("paired", "step", "step_kto"): _row(75.44, 62.47, 47.38, 45.64),
    ("paired", "step", "pipa_m"): _row(79.15, 74.91, 51.94, 53.26),
    ("paired", "step", "pipa_n"): _row(78.70, 73.84, 52.54, 49.06),
    ("unpaired", "answer", "kto"): _row(76.04, 64.44, 46.72, 47.08),
    ("unpaired", "answer", "pipa_m"): _row(79.08, 74.75, 51.04, 52.78),
    ("unpaired", "answer", "pipa_n"): _row(80.97, 74.22, 52.22, 52.00),
    ("unpaired", "step", "step_kto"): _row(76.81, 64.14, 46.98, 45.64),
    ("unpaired", "step", "pipa_m"): _row(78.24, 74.22, 51.82, 53.10),
    ("unpaired", "step", "pipa_n"): _row(79.98, 72.86, 52.78, 52.52),
}


def _ds(gsm: float, math: float):
    return {("ds", "gsm"): gsm, ("ds", "math"): math}


# Tables 2-4 (Deepseek only): ablation name -> {"table", "row", "baseline"}; "row" is the
# ablated variant, "baseline" the comparison row the paper prints in the same table.
# Table 2 prints one PIPA row (78.24 / 51.82, i.e. PIPA-M unpaired step in Table 1) and one
# g=0.5 row; the paper has no PIPA-N counterpart, so fixed_g_n carries no paper number.
# Table 4 prints PIPA-M as 79.08 / 50.82 although Table 1's unpaired/answer PIPA-M is
# 79.08 / 51.04; the numbers are kept as printed.
ABLATIONS: dict[str, dict] = {
    "fixed_g_m": {"table": 2, "row": _ds(73.54, 47.92), "baseline": _ds(78.24, 51.82)},
    "fixed_g_n": {"table": 2, "row": {}, "baseline": {}},
    "prior_all_m": {"table": 3, "row": _ds(77.86, 50.60), "baseline": _ds(78.24, 51.82)},
    "prior_incorrect_n": {"table": 3, "row": _ds(79.83, 50.84),
                          "baseline": _ds(79.98, 52.78)},
    "kto_sft": {"table": 4, "row": _ds(76.27, 47.96), "baseline": _ds(76.04, 46.72)},
    "pipa_m_sft": {"table": 4, "row": _ds(78.24, 50.12), "baseline": _ds(79.08, 50.82)},
}

TABLE_CAPTIONS = {
    1: "Accuracy of every alignment algorithm per data and label setting",
    2: "PIPA with the value head removed (g fixed at 0.5)",
    3: "PIPA with a different prior: (T) = SFT model further fine-tuned on all samples "
       "(PIPA-M, p(y|x)) or on incorrect samples only (PIPA-N, p(y|x,c=0))",
    4: "Effect of an additional SFT loss (coefficient 1.0) on KTO and PIPA-M",
}


def display(algorithm: str) -> str:
    """Display name of an algorithm key (``pipa.registry``; the key itself when unknown)."""
    known = registry.ALGORITHMS.get(algorithm)
    return known.display if known else algorithm


def ablation_display(ablation: str, spec=None) -> str:
    """The row name of ablation ``ablation`` (``spec``: its ``pipa.config_types.Ablation``)."""
    if ablation in ABLATION_DISPLAY:
        return ABLATION_DISPLAY[ablation]
    name = display(spec.algorithm if spec and spec.algorithm else ablation)
    prior = spec.prior if spec else "sft"
    return name if prior == "sft" else f"{name} (prior: {prior})"


def paper_table1(data: str, labels: str, algorithm: str, model: str,
                 benchmark: str) -> float | None:
    """Paper accuracy (%) of a Table 1 cell, benchmark in paper keys ("gsm"/"math")."""
    return TABLE1.get((data, labels, algorithm), {}).get((model, benchmark))


def paper_ablation(ablation: str, role: str, model: str, benchmark: str) -> float | None:
    """Paper accuracy (%) of a Tables 2-4 cell; role is "row" or "baseline"."""
    return ABLATIONS.get(ablation, {}).get(role, {}).get((model, benchmark))
