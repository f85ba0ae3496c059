"""The registry of settings and benchmarks: one table that config, data, grading and
reports read."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipa import registry
from pipa.benchmarks import BENCHMARK_DATA, load_benchmark
from pipa.config import SETTINGS, ConfigError, split_setting
from pipa.grading import MathVerifyGrader, WorldGrader, get_grader


def test_settings_are_every_data_kind_by_every_label_level():
    assert SETTINGS == ("paired_answer", "paired_step", "unpaired_answer", "unpaired_step")
    for name in SETTINGS:
        data, labels = split_setting(name)
        assert f"{data}_{labels}" == name
        assert data in registry.DATA_KINDS and labels in registry.LABEL_LEVELS
    with pytest.raises(ConfigError, match="valid settings: paired_answer"):
        split_setting("paired_steps")


def test_every_benchmark_has_its_grader_and_every_real_one_its_file():
    for source, table in registry.BENCHMARKS.items():
        for name, bench in table.items():
            assert bench.name == name and bench.source == source
            grader = get_grader(name, setting=source)
            if bench.grader == "world":
                assert isinstance(grader, WorldGrader)
            else:
                assert isinstance(grader, MathVerifyGrader)
                assert grader.numeric == (bench.grader == "numeric")
                assert (Path(BENCHMARK_DATA) / bench.file).is_file(), bench.file
                assert load_benchmark(name)[0]["benchmark"] == name


def test_math_names_two_benchmarks_so_it_is_looked_up_with_its_source():
    assert registry.benchmark("math", registry.WORLD).grader == "world"
    assert registry.benchmark("math", registry.REAL).file == "math/test.jsonl"
    with pytest.raises(ValueError, match="ambiguous"):
        get_grader("math")
    with pytest.raises(ValueError, match=r"unknown real benchmark 'gsm'; expected one of "
                                         r"\('gsm8k', 'math', 'math500'\)"):
        registry.benchmark("gsm", registry.REAL)
