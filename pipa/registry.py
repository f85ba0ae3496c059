"""What the names in ``params.yaml`` mean, once: algorithms, settings and benchmarks.

Torch-free and import-free (the standard library only), so that config checks, data,
training, evaluation and reports read the same table. An algorithm's loss function lives in
``pipa.losses`` under the name its entry gives (``pipa.losses.ALGORITHMS`` joins the two).

* An **algorithm** has a display name (tables, figures), a role in the study (``sft``: the
  start point; ``control``: continued SFT, the control row; ``baseline``: the paper's
  baselines; ``pipa``: PIPA-M and PIPA-N; ``variant``: the ablated forms of Tables 2-4),
  the kind of data it reads and what its loss needs.

* A **setting** is a data kind (``paired``: pairs of a correct and an incorrect answer to
  one question; ``unpaired``: single labelled answers) crossed with a label level
  (``answer``: every token of an answer carries its final correctness; ``step``: tokens
  carry the label of their step, from AlphaMath's Q values and ``threshold``).
* A **benchmark** belongs to a source: the built-in world's two tiers, or the real files
  under ``data.benchmark_dir``. ``math`` names a tier of the world and the MATH test set,
  so a benchmark is always looked up with its source.
"""

from __future__ import annotations

from dataclasses import dataclass

ROLES = ("sft", "control", "baseline", "pipa", "variant")


@dataclass(frozen=True)
class Algorithm:
    """name: the key in ``params.yaml``; loss: its function in ``pipa.losses``; data_kind:
    "paired" (``chosen_*``/``rejected_*`` tensors) or "unpaired" (one record per row);
    needs_value_head: build the value head and pass ``value_logits``; needs_mismatched:
    pass KTO's mismatched-pair tensors ``kl_*``; correct_only: train on correct answers
    only; needs_step_ids: pass ``step_ids`` (per-token step index); uses_step_labels: a
    step-level baseline that reads c_t from the step labels."""

    name: str
    display: str
    role: str
    data_kind: str
    loss: str
    needs_value_head: bool = False
    needs_mismatched: bool = False
    correct_only: bool = False
    needs_step_ids: bool = False
    uses_step_labels: bool = False


ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in (
    Algorithm("sft", "SFT model (start point)", "sft", "unpaired", "sft_loss",
              correct_only=True),
    Algorithm("sft_cont", "Continued SFT (control)", "control", "unpaired", "sft_loss",
              correct_only=True),
    Algorithm("dpo", "DPO", "baseline", "paired", "dpo_loss"),
    Algorithm("ipo", "IPO", "baseline", "paired", "ipo_loss"),
    Algorithm("kto", "KTO", "baseline", "unpaired", "kto_loss", needs_mismatched=True),
    Algorithm("step_dpo", "Step-DPO", "baseline", "paired", "step_dpo_loss",
              uses_step_labels=True),
    Algorithm("step_dpo_l0", "Step-DPO (L0)", "baseline", "paired", "step_dpo_l0_loss",
              uses_step_labels=True),
    Algorithm("step_kto", "Step-KTO", "baseline", "unpaired", "step_kto_loss",
              needs_mismatched=True, uses_step_labels=True),
    Algorithm("step_kto_orig", "Step-KTO (orig.)", "baseline", "unpaired",
              "step_kto_orig_loss", needs_mismatched=True, uses_step_labels=True,
              needs_step_ids=True),
    Algorithm("pipa_m", "PIPA-M", "pipa", "unpaired", "pipa_m_loss", needs_value_head=True),
    Algorithm("pipa_n", "PIPA-N", "pipa", "unpaired", "pipa_n_loss", needs_value_head=True),
    Algorithm("pipa_m_fixed_g", "PIPA-M (g=0.5)", "variant", "unpaired",
              "pipa_m_fixed_g_loss"),
    Algorithm("pipa_n_fixed_g", "PIPA-N (g=0.5)", "variant", "unpaired",
              "pipa_n_fixed_g_loss"),
    Algorithm("dpo_sft", "DPO+SFT", "variant", "paired", "dpo_sft_loss"),
    Algorithm("kto_sft", "KTO+SFT", "variant", "unpaired", "kto_sft_loss",
              needs_mismatched=True),
    Algorithm("pipa_m_sft", "PIPA-M+SFT", "variant", "unpaired", "pipa_m_sft_loss",
              needs_value_head=True),
)}

PIPA_ALGORITHMS = tuple(n for n, a in ALGORITHMS.items() if a.role == "pipa")

DATA_KINDS = ("paired", "unpaired")
LABEL_LEVELS = ("answer", "step")


@dataclass(frozen=True)
class Setting:
    name: str      # "<data>_<labels>", the key of params ``algorithms``
    data: str      # one of DATA_KINDS
    labels: str    # one of LABEL_LEVELS


SETTINGS: dict[str, Setting] = {
    f"{data}_{labels}": Setting(f"{data}_{labels}", data, labels)
    for data in DATA_KINDS for labels in LABEL_LEVELS
}

WORLD = "world"
REAL = "real"


@dataclass(frozen=True)
class Benchmark:
    name: str            # the name in params ``data.benchmarks``
    source: str          # WORLD or REAL
    label: str           # the report's column header unless params ``report`` overrides it
    grader: str          # "world" (the exact checker) | "numeric" | "math" (math-verify)
    file: str | None = None  # real benchmarks: the test file under data.benchmark_dir
    corrections: str | None = None  # our table of corrected golds, beside the file


BENCHMARKS: dict[str, dict[str, Benchmark]] = {
    WORLD: {
        "gsm": Benchmark("gsm", WORLD, "Tier 1 (GSM8K stand-in)", "world"),
        "math": Benchmark("math", WORLD, "Tier 2 (MATH stand-in)", "world"),
    },
    REAL: {
        "gsm8k": Benchmark("gsm8k", REAL, "GSM8K", "numeric", "gsm8k/test.jsonl"),
        "math": Benchmark("math", REAL, "MATH", "math", "math/test.jsonl",
                          "math/corrections.json"),
        "math500": Benchmark("math500", REAL, "MATH500", "math", "math/test500.jsonl"),
    },
}


# How the real benchmarks' grader finds an answer that is not boxed (``eval.answer_fallback``):
# after ``#### N`` / "the answer is" / "A: N", the last number of the output (ToRA's and
# MARIO's evaluators), or nothing.
ANSWER_FALLBACKS = ("last_number", "none")


def benchmark(name: str, source: str) -> Benchmark:
    """The benchmark ``name`` of ``source`` (WORLD or REAL); ValueError naming the valid
    ones otherwise."""
    if source not in BENCHMARKS:
        raise ValueError(f"benchmark source must be {WORLD!r} or {REAL!r}, got {source!r}")
    if name not in BENCHMARKS[source]:
        raise ValueError(f"unknown {source} benchmark {name!r}; expected one of "
                         f"{tuple(BENCHMARKS[source])}")
    return BENCHMARKS[source][name]
