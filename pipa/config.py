"""Reading and validating ``params.yaml``: every bad knob is reported before any work starts."""

from __future__ import annotations

import math
import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from pipa import registry, schema
from pipa.config_types import Config

SETTINGS = tuple(registry.SETTINGS)  # the keys of params `algorithms`


class ConfigError(ValueError):
    """A params problem, phrased so the user knows which key to fix and how."""


def load_params(path: str | os.PathLike = "params.yaml") -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path}: params file not found; run from the repository root")
    try:
        with open(path, encoding="utf-8") as fh:
            params = yaml.safe_load(fh)
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); save it as UTF-8") \
            from None
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        what = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise ConfigError(f"{path}: not valid YAML{where}: {what}; fix that line (a tab or a "
                          "missing space after ':' is the usual cause) or restore it with "
                          f"`git checkout {path}`") from None
    if not isinstance(params, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return params


def get(params: dict, dotted: str, source: str = "params.yaml") -> Any:
    """``params['a']['b']`` for ``'a.b'``, with an error naming the missing key."""
    node: Any = params
    walked = []
    for key in dotted.split("."):
        walked.append(key)
        if not isinstance(node, dict) or key not in node:
            raise ConfigError(
                f"{source}: missing key '{'.'.join(walked)}' (needed as '{dotted}'); "
                "add it (see the default params.yaml for its meaning)"
            )
        node = node[key]
    return node


# ``runtime.mixed_precision``: ``auto`` (bf16 autocast where the hardware runs bf16 natively,
# fp32 elsewhere: pipa.hardware.resolve_precision), ``fp32`` or ``bf16``. The old spelling
# ``no`` still means fp32, quoted or not: YAML (and ``dvc exp run -S key=no``) reads a bare
# ``no`` as the boolean false, and DVC re-dumps params.yaml without the quotes.
PRECISIONS = ("auto", "fp32", "bf16")
_PRECISION_ALIASES = {"no": "fp32", False: "fp32"}


def precision_name(value: Any, source: str = "params.yaml") -> str:
    """The canonical name of a ``runtime.mixed_precision`` value (``no``/false -> ``fp32``)."""
    if isinstance(value, bool):
        if value is False:
            return "fp32"
    elif isinstance(value, str) and (value in PRECISIONS or value in _PRECISION_ALIASES):
        return _PRECISION_ALIASES.get(value, value)
    raise ConfigError(
        f"{source}: runtime.mixed_precision={value!r}; valid: {', '.join(PRECISIONS)} "
        "(auto: bf16 autocast on a GPU with bf16 or a CPU with AMX/AVX512-BF16, fp32 "
        "elsewhere; the old `no` means fp32)")


def split_setting(setting: str) -> tuple[str, str]:
    if setting not in SETTINGS:
        raise ConfigError(f"unknown setting {setting!r}; valid settings: {', '.join(SETTINGS)}")
    return registry.SETTINGS[setting].data, registry.SETTINGS[setting].labels


def check_threshold(value: Any, key: str = "threshold") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
        raise ConfigError(f"params.yaml: {key}={value!r} is not a number in [-1, 1]")
    if not -1.0 <= float(value) <= 1.0:
        raise ConfigError(
            f"params.yaml: {key}={value} is outside [-1, 1] (Q values live in [-1, 1]); "
            "pick a value in that range, e.g. -S threshold=0.5"
        )
    return float(value)


def validate(params: dict, source: str = "params.yaml",
             algorithms: Mapping[str, Any] | None = None) -> None:
    """Check the whole params tree once; raises ConfigError listing every problem found.

    ``algorithms``: the table the relation checks read an algorithm's data kind and flags
    from (grid, control, ablations, sweep); by default ``pipa.registry.ALGORITHMS``,
    torch-free, so no stage depends on ``pipa/losses.py`` for its checks
    (``pipa/code_manifest.py``). The schema checks every name against
    ``pipa.registry.ALGORITHMS`` itself: an algorithm exists once it is registered there.
    The pipeline's first stage, ``preflight``, checks before any work starts, and so does
    every stage.
    """
    if algorithms is None:
        algorithms = registry.ALGORITHMS
    # The checks that relate keys, then each key's own type and range (pipa/schema.py),
    # skipping keys a relation check already named. The relation checks assume well-typed
    # values: when one is malformed and they trip over it, the key's own message is reported.
    try:
        problems = _relations(params, source, algorithms)
    except (TypeError, ValueError, AttributeError, KeyError, IndexError):
        if not schema.problems(params, source):
            raise  # not a malformed value: a bug in the relation checks
        problems = []

    def named(key: str) -> bool:  # the richer message of a relation check already names it
        return any(re.search(rf"(?<![\w.]){re.escape(key)}(?![\w])", p) for p in problems)

    problems += schema.problems(params, source, reported=named)
    if problems:
        raise ConfigError("invalid configuration:\n  - " + "\n  - ".join(problems))


def _relations(params: dict, source: str, algorithms: Mapping[str, Any]) -> list[str]:
    """The checks of ``validate`` beyond each key's own rule: names against the registries,
    keys that must agree, and the richer messages of the checks that existed before the
    schema (kept: the tests pin their wording)."""
    problems: list[str] = []

    def need(dotted: str):
        try:
            return get(params, dotted, source)
        except ConfigError as err:
            problems.append(str(err))
            return None

    threshold = need("threshold")
    if threshold is not None:
        try:
            check_threshold(threshold)
        except ConfigError as err:
            problems.append(str(err))
    for t in need("sweep_thresholds") or []:
        try:
            check_threshold(t, "sweep_thresholds")
        except ConfigError as err:
            problems.append(str(err))

    families = need("model_families") or {}
    for model in need("models") or []:
        if model not in families:
            problems.append(
                f"{source}: model {model!r} in 'models' has no entry in 'model_families' "
                f"(defined: {', '.join(sorted(families))})"
            )

    grid = need("algorithms") or {}
    control = need("control")
    if algorithms is not None:
        problems += _algorithm_problems(params, grid, control, algorithms, source)
    for setting, names in grid.items():
        if control is not None and control in (names or []):
            problems.append(
                f"{source}: algorithms.{setting} lists the control {control!r}; remove "
                "it (the control row is added to every block from stage align_control)"
            )
    for setting in grid:
        if setting not in SETTINGS:
            problems.append(
                f"{source}: unknown setting {setting!r} under 'algorithms'; "
                f"valid settings: {', '.join(SETTINGS)}"
            )
    ablations = need("ablations") or {}
    for name, spec in ablations.items():
        if not isinstance(spec, dict):
            problems.append(f"{source}: ablations.{name} must be a mapping")
            continue
        if spec.get("setting") not in SETTINGS:
            problems.append(
                f"{source}: ablations.{name}.setting={spec.get('setting')!r} is unknown; "
                f"valid settings: {', '.join(SETTINGS)}"
            )
        if spec.get("prior") not in ("sft", "all", "incorrect"):
            problems.append(
                f"{source}: ablations.{name}.prior={spec.get('prior')!r}; "
                "valid priors: sft, all, incorrect"
            )
    need("sweep_algorithm")
    for key in ("align.reduction",):
        value = need(key)
        if value is not None and value not in ("sum", "mean"):
            problems.append(f"{source}: {key}={value!r}; valid: sum, mean")
    for dotted in ("seeds", "align.epochs", "eval.batch_size"):
        need(dotted)
    fallback = (params.get("eval") or {}).get("answer_fallback", "last_number")
    if fallback not in registry.ANSWER_FALLBACKS:
        problems.append(f"{source}: eval.answer_fallback={fallback!r}; valid: "
                        f"{', '.join(registry.ANSWER_FALLBACKS)}")
    beta = need("align.beta")
    if beta is not None and not _positive_number(beta):
        problems.append(f"{source}: align.beta={beta!r} must be a positive number (beta <= 0 "
                        "trains toward the incorrect answers or not at all, and IPO divides "
                        "by 2 beta); the paper uses 0.1")
    weights = need("align.kto_weights")
    if weights is not None:
        if not isinstance(weights, dict) or set(weights) != {"desirable", "undesirable"}:
            problems.append(f"{source}: align.kto_weights={weights!r} must be a mapping "
                            "{desirable: w_D, undesirable: w_U}")
        elif not all(_positive_number(w) for w in weights.values()):
            problems.append(f"{source}: align.kto_weights={weights!r}: both weights must be "
                            "positive numbers (1 and 1 is the paper's KTO)")
    if algorithms is not None:
        problems += _kto_micro_batch_problems(params, grid, algorithms, source)
        problems += _name_and_range_problems(params, algorithms, source)
        problems += _search_problems(params, grid, algorithms, source)
    for key in ("runtime.threads", "runtime.workers", "align.length_groups"):
        value = need(key)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)
                                  or value < 1):
            problems.append(f"{source}: {key}={value!r} must be a positive integer "
                            "(runtime.workers: 1 on a GPU, up to runtime.threads on a CPU; "
                            "align.length_groups: 1 turns grouping off)")
    try:
        precision_name(get(params, "runtime.mixed_precision", source), source)
    except ConfigError as err:
        problems.append(str(err))
    try:
        device = get(params, "runtime.device", source)
    except ConfigError as err:
        problems.append(str(err))
    else:
        if not valid_device(device):
            problems.append(f"{source}: runtime.device={device!r}; valid: auto (a GPU when "
                            "torch sees one, else the CPU), cpu, cuda")
    for section in ("sft", "prior_ft", "align"):
        problems.extend(check_batching(params, section, source))
        problems.extend(check_lora(params, section, source))
    problems += _path_problems(params, source)
    return problems


def _search_problems(params: dict, grid: dict, table: Mapping[str, Any],
                     source: str) -> list[str]:
    """Table 5's cells must exist and have a value head; every budget must split into
    ``beam_width`` beams; a reference seed must be a seed of the grid."""
    search = params.get("search")
    if not isinstance(search, dict):
        return []  # absent: the defaults (pipa.config_types.Search); malformed: the schema's
    out: list[str] = []
    for setting in search.get("settings") or []:
        for name in search.get("algorithms") or []:
            spec = table.get(name)
            if spec is not None and not spec.needs_value_head:
                out.append(f"{source}: search.algorithms lists {name!r}, which trains no "
                           "value head; Table 5 searches with g (PIPA's cells: pipa_m, pipa_n)")
            elif name not in (grid.get(setting) or []):
                out.append(f"{source}: search.algorithms lists {name!r} but "
                           f"algorithms.{setting} has no such cell to search; add it there "
                           "or remove it from search")
    width = search.get("beam_width", 2)
    for n in search.get("budgets") or []:
        if isinstance(n, int) and isinstance(width, int) and width >= 1 and n % width:
            out.append(f"{source}: search.budgets has {n}, not a multiple of "
                       f"search.beam_width={width} (a beam is B1 = beam_width x B2 = N / B1)")
    seeds = params.get("seeds") or []
    for seed in search.get("reference_seeds") or []:
        if seed not in seeds:
            out.append(f"{source}: search.reference_seeds has {seed!r}, not one of seeds "
                       f"{seeds}: no cell would run the reference scorers")
    return out


def _name_and_range_problems(params: dict, table: Mapping[str, Any], source: str) -> list[str]:
    """Values that would pass silently and change the numbers: repeated or no seeds,
    benchmark, decoding, ablation-model and lr-grid names that do not exist, a sweep
    algorithm of the wrong data kind, learning rates and sizes out of range."""
    out: list[str] = []
    seeds = params.get("seeds")
    if isinstance(seeds, list):
        if not seeds:
            out.append(f"{source}: seeds=[] runs no cell; give at least one seed, e.g. [0, 1]")
        elif len(set(map(str, seeds))) != len(seeds):
            out.append(f"{source}: seeds={seeds} repeats a seed (the report would count the "
                       "same cell twice); give distinct seeds")
    data = params.get("data") or {}
    source_kind = registry.WORLD if data.get("source", "builtin") == "builtin" else registry.REAL
    known = registry.BENCHMARKS[source_kind]
    for name in data.get("benchmarks") or []:
        if name not in known:
            out.append(f"{source}: data.benchmarks has {name!r}, not a {source_kind} benchmark; "
                       f"valid: {', '.join(known)}")
    ev = params.get("eval") or {}
    if ev.get("decoding", "greedy") not in ("greedy", "beam"):
        out.append(f"{source}: eval.decoding={ev.get('decoding')!r}; valid: greedy, beam")
    for key in ("batch_size", "max_new_tokens", "max_steps"):
        if key in ev and not _positive_int(ev[key]):
            out.append(f"{source}: eval.{key}={ev[key]!r} must be a positive integer")
    models = params.get("models") or []
    for name in params.get("ablation_models") or []:
        if name not in models:
            out.append(f"{source}: ablation_models has {name!r}, not one of models "
                       f"({', '.join(map(str, models))})")
    sweep = params.get("sweep_algorithm")
    if sweep in table and table[sweep].data_kind != "unpaired":
        out.append(f"{source}: sweep_algorithm={sweep!r} trains on pairs, but the threshold "
                   "sweep runs on unpaired step-level data; use an unpaired algorithm "
                   "(pipa_m, pipa_n, kto, step_kto)")
    align = params.get("align") or {}
    if "val_problems" in align and align["val_problems"] is not None \
            and not _positive_int(align["val_problems"]):
        out.append(f"{source}: align.val_problems={align['val_problems']!r} must be a positive "
                   "integer (the validation problems that pick the lr), or null for all")
    grid = align.get("lr_grid")
    if not isinstance(grid, dict) or not grid:
        out.append(f"{source}: align.lr_grid must map 'default' (and any algorithm) to a list "
                   "of learning rates, e.g. {default: [2.0e-5, 2.0e-4]}")
    else:
        for key, values in grid.items():
            if key != "default" and key not in table:
                out.append(f"{source}: align.lr_grid has {key!r}, not an algorithm (it would "
                           f"silently use 'default'); valid keys: default, "
                           f"{', '.join(sorted(table))}")
            if not isinstance(values, list) or not values \
                    or not all(_positive_number(v) for v in values):
                out.append(f"{source}: align.lr_grid.{key}={values!r} must be a non-empty list "
                           "of positive learning rates")
        if "default" not in grid:
            used = {n for names in (params.get("algorithms") or {}).values() for n in names or []}
            missing = sorted(n for n in used if n not in grid)
            if missing:
                out.append(f"{source}: align.lr_grid has no 'default' and no entry for "
                           f"{', '.join(missing)}")
    for key in ("pretrain.lr", "sft.lr", "prior_ft.lr"):
        section, name = key.split(".")
        value = (params.get(section) or {}).get(name)
        if value is not None and not _positive_number(value):
            out.append(f"{source}: {key}={value!r} must be a positive learning rate")
    return out


def _positive_number(value: Any) -> bool:
    return (not isinstance(value, bool) and isinstance(value, (int, float))
            and math.isfinite(value) and value > 0)


def _kto_micro_batch_problems(params: dict, grid: dict, table: Mapping[str, Any],
                              source: str) -> list[str]:
    """KTO's family builds its mismatched pairs (x_i, y_{i+1}) inside a micro-batch: one of
    a single sequence would pair a solution with itself."""
    names = {n for names in grid.values() for n in names or []}
    names |= {spec.get("algorithm") for spec in (params.get("ablations") or {}).values()
              if isinstance(spec, dict)}
    names.add(params.get("sweep_algorithm"))
    kto = sorted(n for n in names if n in table and table[n].needs_mismatched)
    try:
        per_micro = int(get(params, "align.batch_size")) // int(get(params, "align.grad_accum"))
    except (ConfigError, TypeError, ValueError, ZeroDivisionError):
        return []  # reported by check_batching
    if kto and per_micro < 2:
        return [(f"{source}: align.batch_size / align.grad_accum = {per_micro} sequence per "
                f"micro-batch, but {', '.join(kto)} pair each sequence with the next one of "
                "its micro-batch (KTO's mismatched pairs): use at least 2")]
    return []


def _algorithm_problems(params: dict, grid: dict, control: Any,
                        table: Mapping[str, Any], source: str) -> list[str]:
    """Every algorithm name in params checked against ``table`` (``ALGORITHMS``): the grid
    (and paired algorithms kept off unpaired settings), the control, ablations, sweep."""
    problems: list[str] = []
    valid_algos = ", ".join(sorted(table))
    if control is not None:
        spec = table.get(control)
        if spec is None or not spec.correct_only:
            correct_only = ", ".join(sorted(n for n, s in table.items() if s.correct_only))
            problems.append(
                f"{source}: control={control!r} must be an algorithm trained on correct "
                f"solutions only (one cell per data kind serves answer- and step-level "
                f"blocks); valid: {correct_only}"
            )
    for setting, names in grid.items():
        if setting not in SETTINGS:
            continue  # reported by validate
        data = setting.split("_")[0]
        for name in names or []:
            spec = table.get(name)
            if spec is None:
                problems.append(
                    f"{source}: unknown algorithm {name!r} in algorithms.{setting}; "
                    f"valid algorithms: {valid_algos}"
                )
            elif data == "unpaired" and spec.data_kind == "paired":
                problems.append(
                    f"{source}: algorithm {name!r} needs paired data but is listed under "
                    f"algorithms.{setting}; move it to a paired setting"
                )
    ablations = params.get("ablations") or {}
    for name, spec in ablations.items():
        if isinstance(spec, dict) and spec.get("algorithm") not in table:
            problems.append(
                f"{source}: ablations.{name}.algorithm={spec.get('algorithm')!r} is unknown; "
                f"valid algorithms: {valid_algos}"
            )
    sweep = params.get("sweep_algorithm")
    if sweep is not None and sweep not in table:
        problems.append(f"{source}: sweep_algorithm={sweep!r} is unknown; valid: {valid_algos}")
    return problems


def valid_device(value: Any) -> bool:
    """``runtime.device``: auto, cpu or cuda (which GPU: ``CUDA_VISIBLE_DEVICES``, or the
    process's own under ``accelerate launch``)."""
    return value in ("auto", "cpu", "cuda")


def _positive_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value > 0


def check_batching(params: dict, section: str, source: str = "params.yaml") -> list[str]:
    """``<section>.batch_size`` (the global batch) and ``<section>.grad_accum``.

    The global batch of one optimizer step is ``batch_size`` sequences; each of the
    ``grad_accum`` micro-batches of a process holds ``batch_size / (grad_accum × processes)``
    of them. The process count is only known at launch (checked then); here the batch must
    at least split into ``grad_accum`` micro-batches (alignment: paired algorithms take
    ``batch_size / 2`` pairs, which must split too).
    """
    out = []
    values = {}
    for key in ("batch_size", "grad_accum"):
        try:
            value = get(params, f"{section}.{key}", source)
        except ConfigError as err:
            out.append(str(err))
            continue
        if not _positive_int(value):
            out.append(f"{source}: {section}.{key}={value!r} must be a positive integer")
            continue
        values[key] = value
    if len(values) == 2:
        batch, accum = values["batch_size"], values["grad_accum"]
        units = batch // 2 if section == "align" else batch
        if batch % accum or units % accum:
            multiple = accum * (2 if section == "align" else 1)
            out.append(
                f"{source}: {section}.batch_size={batch} (the global batch) does not split "
                f"into {section}.grad_accum={accum} equal micro-batches"
                + (" of pairs (paired algorithms take batch_size/2 pairs)"
                   if section == "align" else "")
                + f"; make batch_size a multiple of {multiple} (x the number of processes "
                "under accelerate launch)"
            )
    return out


def check_lora(params: dict, section: str, source: str = "params.yaml") -> list[str]:
    """``<section>.lora``: enabled, r, alpha, dropout, target_modules."""
    try:
        lora = get(params, f"{section}.lora", source)
    except ConfigError as err:
        return [str(err)]
    key = f"{section}.lora"
    if not isinstance(lora, dict):
        return [f"{source}: {key} must be a mapping (enabled, r, alpha, dropout, target_modules)"]
    out = []
    missing = [k for k in ("enabled", "r", "alpha", "dropout", "target_modules") if k not in lora]
    if missing:
        out.append(f"{source}: {key} lacks {', '.join(missing)} (see align.lora in params.yaml)")
    if "enabled" in lora and not isinstance(lora["enabled"], bool):
        out.append(f"{source}: {key}.enabled={lora['enabled']!r} must be true or false")
    if "r" in lora and not _positive_int(lora["r"]):
        out.append(f"{source}: {key}.r={lora['r']!r} must be a positive integer")
    alpha = lora.get("alpha", 1)
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not alpha > 0:
        out.append(f"{source}: {key}.alpha={alpha!r} must be a positive number")
    dropout = lora.get("dropout", 0.0)
    if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
            or not 0.0 <= dropout < 1.0:
        out.append(f"{source}: {key}.dropout={dropout!r} must be a number in [0, 1)")
    modules = lora.get("target_modules", ["x"])
    if not isinstance(modules, list) or not modules \
            or not all(isinstance(m, str) for m in modules):
        out.append(f"{source}: {key}.target_modules={modules!r} must be a non-empty list of "
                   "module names (e.g. [q_proj, v_proj])")
    return out
PATH_KEYS = ("base_models", "train_data", "val_data", "test_data")


def _path_problems(params: dict, source: str) -> list[str]:
    """``paths`` (what dvc.yaml's stages read) present, and consistent with ``data``."""
    paths = params.get("paths")
    if not isinstance(paths, dict):
        return [(f"{source}: missing section 'paths' (keys: {', '.join(PATH_KEYS)}); copy "
                 "it from the default params.yaml")]
    problems = [f"{source}: paths.{key} must be a non-empty path string"
                for key in PATH_KEYS if not isinstance(paths.get(key), str) or not paths[key]]
    if problems:
        return problems
    data = params.get("data") or {}
    alphamath = data.get("alphamath_path")
    if alphamath is not None and os.path.normpath(alphamath) != os.path.normpath(
            paths["train_data"]):
        problems.append(f"{source}: data.alphamath_path={alphamath!r} differs from "
                        f"paths.train_data={paths['train_data']!r}; the stages read "
                        "paths.train_data: set both to the same file")
    bench = data.get("benchmark_dir")
    if data.get("source", "builtin") != "builtin" and bench:
        for key in ("val_data", "test_data"):
            rel = os.path.relpath(os.path.normpath(paths[key]), os.path.normpath(bench))
            if rel == os.pardir or rel.startswith(os.pardir + os.sep):
                problems.append(
                    f"{source}: paths.{key}={paths[key]!r} is outside data.benchmark_dir="
                    f"{bench!r}, where the evaluating stages read their problems; point it "
                    "at the benchmark files there so DVC tracks what they read")
    return problems


def parse(params: Mapping, source: str = "params.yaml",
          algorithms: Mapping[str, Any] | None = None) -> Config:
    """``validate`` a params mapping, then type it: the ``Config`` the library reads."""
    validate(params, source, algorithms)
    return Config.from_params(params)


def load(path: str | os.PathLike = "params.yaml",
         algorithms: Mapping[str, Any] | None = None) -> Config:
    """Read, validate and type ``path``: what every stage starts with (``stages/_boot.py``)."""
    return parse(load_params(path), str(path), algorithms)
