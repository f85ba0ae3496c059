"""Bad configuration is refused before any work, with the key, the valid values and the fix."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipa.config import ConfigError, check_threshold, load_params, validate
from pipa.preset import merge

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def default_params() -> dict:
    return load_params(ROOT / "params.yaml")


def test_default_and_presets_validate(default_params):
    validate(default_params)
    for preset in sorted((ROOT / "params").glob("*.yaml")):
        validate(merge(default_params, yaml.safe_load(preset.read_text()) or {}), str(preset))


def test_unknown_algorithm_lists_valid_names(default_params):
    bad = copy.deepcopy(default_params)
    bad["algorithms"]["paired_answer"].append("dpoo")
    with pytest.raises(ConfigError) as err:
        validate(bad)
    msg = str(err.value)
    assert "unknown algorithm 'dpoo' in algorithms.paired_answer" in msg
    assert "pipa_m" in msg and "step_dpo" in msg  # the valid names are listed


def test_unknown_setting_and_paired_algorithm_on_unpaired_data(default_params):
    bad = copy.deepcopy(default_params)
    bad["algorithms"]["paired_answr"] = ["dpo"]
    bad["algorithms"]["unpaired_answer"].append("dpo")
    with pytest.raises(ConfigError) as err:
        validate(bad)
    msg = str(err.value)
    assert "unknown setting 'paired_answr'" in msg and "paired_answer, paired_step" in msg
    assert "'dpo' needs paired data" in msg


@pytest.mark.parametrize("value", [1.5, -1.01, float("nan"), "half", True])
def test_threshold_out_of_range(default_params, value):
    bad = copy.deepcopy(default_params)
    bad["threshold"] = value
    with pytest.raises(ConfigError, match="threshold"):
        validate(bad)


@pytest.mark.parametrize("value", [-1, -1.0, 0, 0.3, 1])
def test_threshold_bounds_are_inclusive(value):
    assert check_threshold(value) == float(value)


def test_missing_key_is_named(default_params):
    bad = copy.deepcopy(default_params)
    del bad["align"]["beta"]
    del bad["seeds"]
    with pytest.raises(ConfigError) as err:
        validate(bad)
    assert "missing key 'align.beta'" in str(err.value)
    assert "missing key 'seeds'" in str(err.value)


def test_every_problem_reported_at_once(default_params):
    bad = copy.deepcopy(default_params)
    bad["threshold"] = 2
    bad["models"] = ["ds", "gpt"]
    bad["ablations"]["kto_sft"]["prior"] = "mystery"
    with pytest.raises(ConfigError) as err:
        validate(bad)
    msg = str(err.value)
    assert "threshold=2" in msg and "'gpt'" in msg and "prior='mystery'" in msg


def test_stage_refuses_bad_params_before_any_work(tmp_path, default_params):
    bad = copy.deepcopy(default_params)
    bad["algorithms"]["paired_step"] = ["step_dpo", "nonsense"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(bad))
    out = tmp_path / "world"
    proc = subprocess.run([sys.executable, str(ROOT / "stages" / "world.py"), "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode != 0
    assert "unknown algorithm 'nonsense'" in proc.stderr
    assert not out.exists()
