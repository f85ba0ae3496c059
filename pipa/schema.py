"""Every key ``params.yaml`` may hold, with the type and range of its value: the schema that
``pipa.config.validate`` walks before any work.

``RULES`` maps a dotted key to a ``Check``; ``*`` stands for a name the user chooses (a
model, a setting, an ablation, a tier). ``problems(params)`` reports a leaf that matches no
rule (a misspelt key would otherwise be ignored: the code would read its default) and a
value its rule refuses, each naming the key, the value and what is valid. The checks that
relate several keys (a control trained on correct solutions only, a sweep algorithm of the
right data kind, batches that split into micro-batches, paths that agree) stay in
``pipa.config``; a key they report is not reported again here.

Each ``Check`` carries ``bad``: values it must refuse. ``tests/test_config.py`` walks every
leaf of the default and preset params, finds its rule and feeds it each bad value through
``validate``: a key without a check fails that test.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from pipa import registry


@dataclass(frozen=True)
class Check:
    """What a value must be (``what``, for the message), the test (``ok``) and values it
    refuses (``bad``, for the schema-walk test)."""

    what: str
    ok: Callable[[Any], bool]
    bad: tuple


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return (isinstance(v, (int, float)) and not isinstance(v, bool)) and math.isfinite(v)


def integer(lo: int | None = None) -> Check:
    if lo is None:
        return Check("an integer", _is_int, ("x", 1.5, True))
    return Check(f"an integer >= {lo}", lambda v: _is_int(v) and v >= lo,
                 (lo - 1, "x", 1.5, True))


def number(lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False) -> Check:
    """A finite number in the interval [lo, hi] (``lo_open``/``hi_open``: excluded)."""
    def ok(v: Any) -> bool:
        if not _is_number(v):
            return False
        if lo is not None and (v <= lo if lo_open else v < lo):
            return False
        return not (hi is not None and (v >= hi if hi_open else v > hi))

    left = "" if lo is None else f"{'(' if lo_open else '['}{lo:g}, "
    right = "" if hi is None else f"{hi:g}{')' if hi_open else ']'}"
    if lo is not None and hi is None:
        what = f"a number > {lo:g}" if lo_open else f"a number >= {lo:g}"
    elif lo is None and hi is None:
        what = "a finite number"
    else:
        what = f"a number in {left or '(-inf, '}{right}"
    bad: list[Any] = ["x", float("nan"), True]
    if lo is not None:
        bad.append(lo if lo_open else lo - 1)
    if hi is not None:
        bad.append(hi if hi_open else hi + 1)
    return Check(what, ok, tuple(bad))


POSITIVE = number(0, lo_open=True)
PROBABILITY = number(0, 1)
BOOLEAN = Check("true or false", lambda v: isinstance(v, bool), ("yes", 1, None))


def choice(*values: Any) -> Check:
    return Check(f"one of {', '.join(map(str, values))}", lambda v: v in values,
                 ("bogus", 3))


def text(nonempty: bool = True) -> Check:
    def ok(v: Any) -> bool:
        return isinstance(v, str) and (bool(v.strip()) or not nonempty)
    return Check("a non-empty string" if nonempty else "a string", ok,
                 (("", 3) if nonempty else (3, None)))


def optional(check: Check) -> Check:
    """``check`` or null."""
    return Check(f"{check.what}, or null", lambda v: v is None or check.ok(v),
                 tuple(b for b in check.bad if b is not None))


def list_of(item: Check, *, nonempty: bool = True, unique: bool = False,
            length: int | None = None) -> Check:
    def ok(v: Any) -> bool:
        if not isinstance(v, list) or (nonempty and not v) or not all(item.ok(x) for x in v):
            return False
        if length is not None and len(v) != length:
            return False
        return not (unique and len(set(map(repr, v))) != len(v))

    what = (f"a {'non-empty ' if nonempty else ''}list of {item.what}"
            + (f", {length} of them" if length else "") + (", no repeats" if unique else ""))
    bad: list[Any] = ["x", [item.bad[0]]]
    if nonempty:
        bad.append([])
    return Check(what, ok, tuple(bad))


def int_range(lo: int = 0) -> Check:
    """``[low, high]``: two integers >= ``lo``, low <= high."""
    return Check(f"[low, high], integers >= {lo} with low <= high",
                 lambda v: (isinstance(v, list) and len(v) == 2 and all(_is_int(x) for x in v)
                            and lo <= v[0] <= v[1]),
                 ([5, 2], [1], "x", [lo - 1, lo]))


# read at check time: a test (or a fork) that registers an algorithm is checked against it
ALGORITHM = Check("an algorithm of pipa.registry.ALGORITHMS",
                  lambda v: isinstance(v, str) and v in registry.ALGORITHMS, ("bogus", 3))
WORLD_OPS = ("+", "-", "*", "/")

#: Every key params may hold (``*``: a name of the user's choosing), and its check.
RULES: dict[str, Check] = {
    "seed": integer(),
    "runtime.threads": integer(1),
    "runtime.workers": integer(1),
    "runtime.device": choice("auto", "cpu", "cuda"),
    "runtime.launcher": text(nonempty=False),
    "runtime.dtype": choice("float32", "bfloat16", "float16"),
    "runtime.mixed_precision": choice("auto", "fp32", "bf16", "no", False),
    "threshold": number(-1, 1),
    "models": list_of(text(), unique=True),
    "seeds": list_of(integer(), unique=True),
    "control": ALGORITHM,
    "algorithms.*": list_of(ALGORITHM, nonempty=False, unique=True),
    "ablation_models": list_of(text(), nonempty=False, unique=True),
    "ablations.*.table": integer(1),
    "ablations.*.setting": choice(*registry.SETTINGS),
    "ablations.*.algorithm": ALGORITHM,
    "ablations.*.prior": choice("sft", "all", "incorrect"),
    "ablations.*.baseline": ALGORITHM,
    "sweep_thresholds": list_of(number(-1, 1), unique=True),
    "sweep_algorithm": ALGORITHM,
    "data.source": choice("builtin", "alphamath"),
    "data.alphamath_path": text(),
    "data.alphamath_hub.repo_id": text(),
    "data.alphamath_hub.filename": text(),
    "data.alphamath_hub.revision": optional(text()),
    "data.benchmark_dir": text(),
    "data.benchmarks": list_of(text(), unique=True),
    "paths.*": text(),
    "world.sizes.*.*": integer(1),
    "world.tiers.*.n_ops": int_range(1),
    "world.tiers.*.ops": list_of(choice(*WORLD_OPS), unique=True),
    "world.tiers.*.start": int_range(1),
    "world.tiers.*.add": int_range(1),
    "world.tiers.*.sub": int_range(1),
    "world.tiers.*.mul": int_range(1),
    "world.tiers.*.div": int_range(1),
    "world.tiers.*.max_value": integer(1),
    "world.corpus.n_docs": integer(1),
    "world.corpus.fresh_share": PROBABILITY,
    "world.errors.borrow": PROBABILITY,
    "world.errors.carry": PROBABILITY,
    "world.errors.mul_carry": PROBABILITY,
    "world.errors.copy": PROBABILITY,
    "world.errors.slip": PROBABILITY,
    "world.errors.slip_max": integer(1),
    "world.errors.mode": choice("random", "fixed"),
    "world.errors.salt": integer(),
    "tokenizer.vocab_size": integer(1),
    "model_families.*.family": text(),
    "model_families.*.style": choice("ds", "qw"),
    "model_families.*.prompt_format": choice("world", "chat"),
    "model_families.*.arch.hidden_size": integer(1),
    "model_families.*.arch.intermediate_size": integer(1),
    "model_families.*.arch.num_layers": integer(1),
    "model_families.*.arch.num_heads": integer(1),
    "model_families.*.arch.num_kv_heads": integer(1),
    "model_families.*.arch.max_len": integer(1),
    "model_families.*.hub_id": text(),
    "model_families.*.revision": optional(text()),
    "model_families.*.hub_allow_patterns": list_of(text()),
    "model_families.*.path": text(),
    "model_families.*.dtype": choice("float32", "bfloat16", "float16"),
    "model_families.*.gguf_package": text(),
    "pretrain.steps": integer(1),
    "pretrain.batch_size": integer(1),
    "pretrain.seq_len": integer(2),
    "pretrain.lr": POSITIVE,
    "pretrain.warmup": integer(0),
    "pretrain.min_lr_ratio": PROBABILITY,
    "pretrain.weight_decay": number(0),
    "pretrain.seed": optional(integer(0)),
    "sampling.model": text(),
    "sampling.n_problems": optional(integer(1)),
    "sampling.samples_per_problem": integer(1),
    "sampling.rollouts": integer(1),
    "sampling.temperature": POSITIVE,
    "sampling.max_new_tokens": integer(1),
    "sampling.batch_size": integer(1),
    "sampling.include_gold": BOOLEAN,
    **{f"{section}.{key}": check
       for section in ("sft", "prior_ft", "align")
       for key, check in {
           "epochs": POSITIVE,
           "batch_size": integer(1),
           "grad_accum": integer(1),
           "lr": POSITIVE,
           "min_lr_ratio": PROBABILITY,
           "lora.enabled": BOOLEAN,
           "lora.r": integer(1),
           "lora.alpha": POSITIVE,
           "lora.dropout": number(0, 1, hi_open=True),
           "lora.target_modules": list_of(text()),
       }.items()},
    "sft.warmup": integer(0),
    "prior_ft.warmup": integer(0),
    "align.length_groups": integer(1),
    "align.beta": POSITIVE,
    "align.kto_weights.desirable": POSITIVE,
    "align.kto_weights.undesirable": POSITIVE,
    "align.reduction": choice("sum", "mean"),
    "align.ipo_normalize": BOOLEAN,
    "align.sft_coef": number(0),
    "align.warmup_ratio": PROBABILITY,
    "align.grad_clip": POSITIVE,
    "align.val_problems": optional(integer(1)),
    "align.value_head_lr": optional(POSITIVE),
    "align.lr_grid.*": list_of(POSITIVE),
    "eval.batch_size": integer(1),
    "eval.max_new_tokens": integer(1),
    "eval.decoding": choice("greedy", "beam"),
    "eval.beam.*": list_of(integer(1), length=2),
    "eval.max_steps": integer(1),
    "eval.stop_strings": list_of(Check("a non-empty string (whitespace counts)",
                                       lambda v: isinstance(v, str) and v != "", ("", 3)),
                                 nonempty=False),
    "eval.answer_fallback": choice(*registry.ANSWER_FALLBACKS),
    "search.settings": list_of(choice(*registry.SETTINGS), unique=True),
    "search.algorithms": list_of(ALGORITHM, unique=True),
    "search.problems": optional(integer(1)),
    "search.budgets": list_of(integer(1), unique=True),
    "search.beam_width": integer(1),
    "search.temperature": POSITIVE,
    "search.max_step_tokens": integer(1),
    "search.reference_seeds": list_of(integer(), nonempty=False, unique=True),
    "report.benchmark_labels.*": text(),
    "report.model_labels.*": text(),
}


def leaves(params: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    """Every (dotted key, value) whose value is not a mapping."""
    if isinstance(params, dict):  # an empty mapping (``ablations: {}``) has no leaves
        for key, value in params.items():
            yield from leaves(value, f"{prefix}{key}.")
    elif prefix:
        yield prefix[:-1], params


def _pattern(rule: str) -> re.Pattern:
    return re.compile("^" + r"\.".join("[^.]+" if part == "*" else re.escape(part)
                                       for part in rule.split(".")) + "$")


_PATTERNS = [(_pattern(rule), rule) for rule in RULES]


def rule_for(key: str) -> str | None:
    """The rule ``key`` falls under (the most specific when several match), or None."""
    matches = [rule for pattern, rule in _PATTERNS if pattern.match(key)]
    return min(matches, key=lambda r: r.count("*")) if matches else None


def _known_under(section: str) -> list[str]:
    """The key names the rules allow directly under ``section`` ("" = the top level)."""
    depth = section.count(".") + 1 if section else 0
    return sorted({r.split(".")[depth] for r in RULES if r.count(".") >= depth
                   and (not section or _pattern(".".join(r.split(".")[:depth])).match(section))})


def _unknown(key: str, value: Any, source: str) -> str:
    """The message for a leaf no rule covers: a section left empty, or the first component
    of the key that no rule allows (a misspelt section or key), with the names allowed."""
    prefixes = {".".join(r.split(".")[:i]) for r in RULES for i in range(1, r.count(".") + 1)}
    if value is None and any(_pattern(p).match(key) for p in prefixes):
        return (f"{source}: {key} is empty (null) but must be a mapping (see the default "
                "params.yaml for its keys)")
    parts = key.split(".")
    for i, part in enumerate(parts):
        section = ".".join(parts[:i])
        known = _known_under(section)
        if part not in known and not any(_pattern(".".join(r.split(".")[:i + 1])).match(
                ".".join(parts[:i + 1])) for r in RULES if r.count(".") >= i):
            where = f"keys of {section}" if section else "top-level keys"
            bad = ".".join(parts[:i + 1])
            inside = f" (in {key!r})" if bad != key else ""
            return (f"{source}: unknown key {bad!r}{inside}: the code would never read it, so "
                    f"a misspelt key silently keeps the default; known {where}: "
                    f"{', '.join(known)}")
    return f"{source}: unknown key {key!r}; see the default params.yaml for the keys"


def problems(params: dict, source: str = "params.yaml",
             reported: Callable[[str], bool] = lambda key: False) -> list[str]:
    """A line per leaf of ``params`` that matches no rule or fails its check, skipping the
    keys ``reported`` says another check already named (its message is the richer one)."""
    out = []
    for key, value in leaves(params):
        rule = rule_for(key)
        if rule is None:
            out.append(_unknown(key, value, source))
        elif not RULES[rule].ok(value) and not reported(key):
            out.append(f"{source}: {key}={value!r} must be {RULES[rule].what}")
    return out
