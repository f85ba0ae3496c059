"""What the names in ``params.yaml`` mean, once: settings and benchmarks.

Torch-free and import-free (the standard library only), so that config checks, data,
training, evaluation and reports read the same table. Algorithms have theirs beside their
losses (``pipa.losses.ALGORITHMS``).

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
