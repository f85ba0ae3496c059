"""Bad configuration is refused before any work, with the key, the valid values and the fix."""

from __future__ import annotations

import copy
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipa.config import ConfigError, check_threshold, load_params
from pipa.config import validate as validate_without_names
from pipa.config_types import Search
from pipa.losses import ALGORITHMS
from pipa.preset import merge

ROOT = Path(__file__).resolve().parents[1]


def validate(params: dict, source: str = "params.yaml") -> None:
    """The full check, algorithm names against the ALGORITHMS table included (what the
    preflight stage and every stage that uses the names run)."""
    validate_without_names(params, source, ALGORITHMS)


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


def test_control_must_be_correct_only_and_not_listed_twice(default_params):
    bad = copy.deepcopy(default_params)
    bad["control"] = "dpo"
    bad["algorithms"]["unpaired_step"].append("dpo")  # also a paired algorithm there
    with pytest.raises(ConfigError) as err:
        validate(bad)
    msg = str(err.value)
    assert "control='dpo' must be an algorithm trained on correct solutions only" in msg
    assert "valid: sft, sft_cont" in msg
    listed = copy.deepcopy(default_params)
    listed["algorithms"]["paired_step"].insert(0, "sft_cont")
    with pytest.raises(ConfigError, match="algorithms.paired_step lists the control 'sft_cont'"):
        validate(listed)


@pytest.mark.parametrize("value", ["fp8", "bfloat16", None, True, "yes"])
def test_mixed_precision_names_valid_values(default_params, value):
    bad = copy.deepcopy(default_params)
    bad["runtime"]["mixed_precision"] = value
    with pytest.raises(ConfigError) as err:
        validate(bad)
    assert f"runtime.mixed_precision={value!r}; valid: auto, fp32, bf16" in str(err.value)


@pytest.mark.parametrize("text", ["auto", "fp32", "bf16", "no", '"no"'])
def test_mixed_precision_accepts_every_name_as_yaml_spells_it(default_params, text):
    """`-S runtime.mixed_precision=no` and DVC's re-dumped params.yaml give YAML's false."""
    import yaml

    good = copy.deepcopy(default_params)
    good["runtime"]["mixed_precision"] = yaml.safe_load(f"v: {text}")["v"]
    validate(good)


@pytest.mark.parametrize("value", ["gpu", "cuda:0", "", None])
def test_device_names_valid_values(default_params, value):
    bad = copy.deepcopy(default_params)
    bad["runtime"]["device"] = value
    with pytest.raises(ConfigError) as err:
        validate(bad)
    assert (f"runtime.device={value!r}; valid: auto (a GPU when torch sees one, else the CPU), "
            "cpu, cuda\n") in str(err.value) + "\n"


def test_cuda_without_a_gpu_is_a_clear_error(monkeypatch):
    import torch

    from pipa.hardware import resolve_device

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    assert resolve_device("cpu").type == "cpu"
    with pytest.raises(ConfigError, match="torch sees no GPU.*runtime.device: auto or cpu"):
        resolve_device("cuda")


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


def _run_stage(script: str, folder: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(ROOT / "stages" / script), *args], cwd=folder,
                          capture_output=True, text=True, timeout=120, check=False)


def test_preflight_refuses_an_unknown_algorithm_before_any_work(tmp_path, default_params):
    """The pipeline's first stage checks the names against the ALGORITHMS table."""
    bad = copy.deepcopy(default_params)
    bad["algorithms"]["paired_step"] = ["step_dpo", "nonsense"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(bad))
    out = tmp_path / "code"
    proc = _run_stage("preflight.py", tmp_path, "--stages", str(ROOT / "stages"),
                      "--out", str(out))
    assert proc.returncode != 0
    assert "unknown algorithm 'nonsense'" in proc.stderr and "pipa_m" in proc.stderr
    assert not out.exists()


def test_any_stage_refuses_bad_params_before_any_work(tmp_path, default_params):
    bad = copy.deepcopy(default_params)
    bad["threshold"] = 1.5
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(bad))
    out = tmp_path / "world"
    proc = _run_stage("world.py", tmp_path, "--out", str(out))
    assert proc.returncode != 0
    assert "threshold=1.5 is outside [-1, 1]" in proc.stderr
    assert not out.exists()


def test_without_the_losses_every_name_is_still_checked(default_params):
    """What a stage that never trains runs: the names are checked against the torch-free
    registry (``pipa.registry.ALGORITHMS``), the same names the losses' table has."""
    from pipa import registry

    assert set(registry.ALGORITHMS) == set(ALGORITHMS)
    bad = copy.deepcopy(default_params)
    bad["algorithms"]["paired_step"].append("nonsense")
    bad["algorithms"]["paired_stp"] = ["dpo"]
    bad["threshold"] = -3
    with pytest.raises(ConfigError) as err:
        validate_without_names(bad)
    assert "unknown setting 'paired_stp'" in str(err.value)
    assert "threshold=-3" in str(err.value)
    assert "unknown algorithm 'nonsense' in algorithms.paired_step" in str(err.value)


@pytest.mark.parametrize("section", ["sft", "prior_ft", "align"])
@pytest.mark.parametrize("value", [0, -2, 1.5, "2", True, None])
def test_grad_accum_must_be_a_positive_integer(default_params, section, value):
    bad = copy.deepcopy(default_params)
    bad[section]["grad_accum"] = value
    with pytest.raises(ConfigError, match=rf"{section}\.grad_accum=.* must be a positive integer"):
        validate(bad)


@pytest.mark.parametrize("section", ["sft", "prior_ft", "align"])
def test_missing_grad_accum_is_named(default_params, section):
    bad = copy.deepcopy(default_params)
    del bad[section]["grad_accum"]
    with pytest.raises(ConfigError, match=f"missing key '{section}.grad_accum'"):
        validate(bad)


@pytest.mark.parametrize(("section", "batch_size", "grad_accum"),
                         [("sft", 32, 3), ("prior_ft", 10, 4), ("align", 12, 5),
                          ("align", 12, 4)])  # align: 12 sequences, but 6 pairs do not split in 4
def test_global_batch_must_split_into_micro_batches(default_params, section, batch_size,
                                                   grad_accum):
    bad = copy.deepcopy(default_params)
    bad[section].update(batch_size=batch_size, grad_accum=grad_accum)
    with pytest.raises(ConfigError) as err:
        validate(bad)
    assert f"{section}.batch_size={batch_size} (the global batch) does not split" in str(err.value)
    assert f"{section}.grad_accum={grad_accum}" in str(err.value)


def test_batch_that_splits_is_accepted(default_params):
    ok = copy.deepcopy(default_params)
    ok["sft"].update(batch_size=32, grad_accum=4)
    ok["align"].update(batch_size=32, grad_accum=8)  # 16 pairs: 2 per micro-batch
    validate(ok)


@pytest.mark.parametrize("section", ["sft", "prior_ft", "align"])
def test_bad_lora_keys_are_named(default_params, section):
    bad = copy.deepcopy(default_params)
    bad[section]["lora"] = {"enabled": "yes", "r": 0, "alpha": -1, "dropout": 1.0,
                            "target_modules": []}
    with pytest.raises(ConfigError) as err:
        validate(bad)
    msg = str(err.value)
    for key in ("enabled='yes'", "r=0", "alpha=-1", "dropout=1.0", "target_modules=[]"):
        assert f"{section}.lora.{key}" in msg
    del bad[section]["lora"]
    with pytest.raises(ConfigError, match=f"missing key '{section}.lora'"):
        validate(bad)


def test_real_preset_micro_batches_on_eight_gpus(default_params):
    """The paper's global batches (SFT 1024, alignment 256) as 8-sequence micro-batches on the
    8 processes of configs/accelerate/*.yaml; LoRA r=64 alpha=16 for SFT as for alignment."""
    real = merge(default_params, yaml.safe_load((ROOT / "params" / "real.yaml").read_text()))
    for section, global_batch in (("sft", 1024), ("prior_ft", 1024), ("align", 256)):
        cfg = real[section]
        assert cfg["batch_size"] == global_batch
        assert cfg["batch_size"] // (cfg["grad_accum"] * 8) == 8
        assert cfg["lora"]["enabled"] and (cfg["lora"]["r"], cfg["lora"]["alpha"]) == (64, 16)
    for name in ("params.yaml", "params/micro.yaml"):
        params = merge(default_params, yaml.safe_load((ROOT / name).read_text()) or {})
        assert all(params[s]["grad_accum"] == 1 for s in ("sft", "prior_ft", "align"))
        assert not params["sft"]["lora"]["enabled"]


def _set(params: dict, dotted: str, value) -> dict:
    out = copy.deepcopy(params)
    node = out
    *parents, last = dotted.split(".")
    for key in parents:
        node = node[key]
    node[last] = value
    return out


# Values that would pass silently and change the numbers, each refused at preflight with
# the key, the bad value and the fix (a catalogue: add a row for every new check).
SILENT_CHANGES = [
    ("align.beta", -1, "align.beta=-1 must be a positive number"),
    ("align.beta", 0, "align.beta=0 must be a positive number"),
    ("align.kto_weights", {"desirable": 0, "undesirable": 1}, "both weights must be positive"),
    ("seeds", [0, 0], "seeds=[0, 0] repeats a seed"),
    ("seeds", [], "seeds=[] runs no cell"),
    ("data.benchmarks", ["gsm", "maths"], ("data.benchmarks has 'maths', not a world benchmark; "
                                          "valid: gsm, math")),
    ("eval.decoding", "beamz", "eval.decoding='beamz'; valid: greedy, beam"),
    ("eval.batch_size", 0, "eval.batch_size=0 must be a positive integer"),
    ("eval.answer_fallback", "first_number", ("eval.answer_fallback='first_number'; valid: "
                                             "last_number, none")),
    ("ablation_models", ["dz"], "ablation_models has 'dz', not one of models (ds, qw)"),
    ("sweep_algorithm", "dpo", "sweep_algorithm='dpo' trains on pairs"),
    ("align.val_problems", 0, "align.val_problems=0 must be a positive integer"),
    ("align.lr_grid", {}, "align.lr_grid must map 'default'"),
    ("align.lr_grid", {"default": [2e-5], "dpoo": [1e-4]},
     "align.lr_grid has 'dpoo', not an algorithm (it would silently use 'default')"),
    ("align.lr_grid", {"default": [-2e-5]}, "align.lr_grid.default=[-2e-05] must be a non-empty"),
    ("align.lr_grid", {"dpo": [2e-5]}, "align.lr_grid has no 'default' and no entry for"),
    ("sft.lr", -1e-3, "sft.lr=-0.001 must be a positive learning rate"),
    ("pretrain.lr", 0, "pretrain.lr=0 must be a positive learning rate"),
    ("search.algorithms", ["kto"], "search.algorithms lists 'kto', which trains no value head"),
    ("search.algorithms", ["pipa_m_sft"], "algorithms.unpaired_step has no such cell"),
    ("search.budgets", [3, 8], "search.budgets has 3, not a multiple of search.beam_width=2"),
    ("search.reference_seeds", [7], "search.reference_seeds has 7, not one of seeds"),
]


@pytest.mark.parametrize("key, value, message", SILENT_CHANGES,
                         ids=[f"{k}={v}" for k, v, _ in SILENT_CHANGES])
def test_values_that_would_silently_change_the_numbers_are_refused(default_params, key, value,
                                                                   message):
    with pytest.raises(ConfigError) as err:
        validate(_set(default_params, key, value))
    assert message in str(err.value)


def test_kto_needs_two_sequences_per_micro_batch(default_params):
    bad = _set(_set(default_params, "align.batch_size", 4), "align.grad_accum", 4)
    with pytest.raises(ConfigError, match=r"align.batch_size / align.grad_accum = 1 sequence "
                                          r"per micro-batch, but kto, kto_sft, step_kto"):
        validate(bad)


# --------------------------------------------------------------------------------------
# the schema walk: every key of every shipped params file has a check that bites
# --------------------------------------------------------------------------------------

def _every_shipped_params(default_params) -> dict[str, dict]:
    out = {"params.yaml": default_params}
    for preset in sorted((ROOT / "params").glob("*.yaml")):
        out[preset.name] = merge(default_params, yaml.safe_load(preset.read_text()) or {})
    return out


def test_every_key_of_every_params_file_has_a_check_that_refuses_a_bad_value(default_params):
    """For each leaf of params.yaml and of each preset merged onto it, its rule in
    pipa/schema.py refuses every one of the rule's bad values, through the full validate,
    with a message naming the key. A key with no rule fails here; so does a rule whose bad
    values pass (a check that cannot fail)."""
    from pipa import schema

    unmatched, silent = [], []
    seen: set[tuple[str, str]] = set()
    for name, params in _every_shipped_params(default_params).items():
        for key, _value in schema.leaves(params):
            rule = schema.rule_for(key)
            if rule is None:
                unmatched.append(f"{name}: {key}")
                continue
            if (rule, key.split(".")[0]) in seen and "*" in rule:
                continue  # one instance of a wildcard rule per section is enough
            seen.add((rule, key.split(".")[0]))
            assert schema.RULES[rule].bad, rule
            for bad in schema.RULES[rule].bad:
                try:
                    validate(_set(params, key, bad), name)
                except ConfigError as err:
                    if key not in str(err):
                        silent.append(f"{name}: {key}={bad!r} refused without naming the key")
                else:
                    silent.append(f"{name}: {key}={bad!r} passed")
    assert not unmatched, f"keys without a rule in pipa/schema.py: {unmatched}"
    assert not silent, "\n".join(silent)


def test_a_misspelt_key_is_refused_naming_the_known_ones(default_params):
    bad = copy.deepcopy(default_params)
    bad["align"]["betta"] = 0.5
    with pytest.raises(ConfigError, match=r"unknown key 'align.betta'.*known keys of align: "
                                          r".*beta"):
        validate(bad)
    bad = copy.deepcopy(default_params)
    bad["sed"] = 3
    with pytest.raises(ConfigError, match=r"unknown key 'sed'.*top-level keys: .*seed"):
        validate(bad)


def test_every_rule_is_used_or_documented_as_optional(default_params):
    """A rule no shipped params file reaches is a key some code reads with a default (an
    optional key): each must be read somewhere in pipa/ or stages/, so the schema keeps no
    rule for a key that no longer exists."""
    from pipa import schema

    used = {schema.rule_for(k) for p in _every_shipped_params(default_params).values()
            for k, _ in schema.leaves(p)}
    code = "\n".join(p.read_text() for folder in ("pipa", "stages")
                     for p in (ROOT / folder).rglob("*.py") if p.name != "schema.py")
    for rule in sorted(set(schema.RULES) - used):
        assert f'"{rule.rsplit(".", 1)[-1]}"' in code, f"{rule}: no code reads it"


def test_a_yaml_syntax_error_is_one_line_naming_the_file_and_the_line(tmp_path):
    bad = tmp_path / "params.yaml"
    bad.write_text("seed: 1\nalign:\n  beta: [0.1\n  epochs: 1\n")
    with pytest.raises(ConfigError) as err:
        load_params(bad)
    message = str(err.value)
    assert message.startswith(f"{bad}: not valid YAML at line ") and "\n" not in message
    (tmp_path / "latin1.yaml").write_bytes("seed: 1 # caf\xe9\n".encode("latin-1"))
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_params(tmp_path / "latin1.yaml")
    script = f"import sys; sys.path.insert(0, 'stages'); import _boot; _boot.config({str(bad)!r})"
    result = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True,
                            text=True, cwd=ROOT)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr and "not valid YAML at line" in result.stderr


# ---------------------------------------------------------------- the typed config


def test_default_and_presets_type_into_a_frozen_config(default_params):
    """Every params file the product ships types into a ``Config``; its values are the
    file's (the types the library computes with), and it cannot be changed in place."""
    import dataclasses

    from pipa.config import parse
    from pipa.config_types import Config

    for preset in [None, *sorted((ROOT / "params").glob("*.yaml"))]:
        params = default_params if preset is None else \
            merge(default_params, yaml.safe_load(preset.read_text()) or {})
        cfg = parse(params, str(preset or "params.yaml"), ALGORITHMS)
        assert isinstance(cfg, Config)
        assert cfg.align.beta == float(params["align"]["beta"])
        assert cfg.align.lrs("dpo") == [float(x) for x in params["align"]["lr_grid"].get(
            "dpo", params["align"]["lr_grid"]["default"])]
        for name, fam in params["model_families"].items():
            assert cfg.family(name).arch.max_len == fam["arch"]["max_len"]
        assert cfg.threshold == params["threshold"]  # as written: it names a folder
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.align.beta = 0.2
    with pytest.raises(TypeError):
        cfg.algorithms["paired_answer"] = ("dpo",)
    other = "mean" if cfg.align.reduction == "sum" else "sum"
    changed = dataclasses.replace(cfg, align=dataclasses.replace(cfg.align, reduction=other))
    assert changed.align.reduction == other
    assert cfg.align.reduction == params["align"]["reduction"]  # the original is untouched


def test_optional_keys_take_their_defaults_in_the_typed_config(default_params):
    from pipa.config import parse

    params = copy.deepcopy(default_params)
    for key in ("decoding", "max_steps", "stop_strings", "answer_fallback"):
        params["eval"].pop(key, None)
    for key in ("val_problems", "value_head_lr"):
        params["align"].pop(key, None)
    params["sampling"].pop("include_gold", None)
    params["pretrain"].pop("weight_decay", None)
    params["pretrain"].pop("seed", None)
    params.pop("search")
    cfg = parse(params, "params.yaml", ALGORITHMS)
    assert (cfg.eval.decoding, cfg.eval.max_steps, cfg.eval.stop_strings,
            cfg.eval.answer_fallback) == ("greedy", 16, (), "last_number")
    assert cfg.align.val_problems is None and cfg.align.value_head_lr is None
    assert cfg.sampling.include_gold is False and cfg.pretrain.weight_decay == 0.0
    assert cfg.pretrain.seed is None
    assert cfg.search == Search() and cfg.search.budgets == (4, 8)  # Table 5's defaults


def test_parse_refuses_what_validate_refuses(default_params):
    """The typed config exists only for params that passed validation: β <= 0 included."""
    from pipa.config import parse

    params = copy.deepcopy(default_params)
    params["align"]["beta"] = 0.0
    with pytest.raises(ConfigError, match="align.beta=0.0 must be a positive number"):
        parse(params, "params.yaml", ALGORITHMS)
