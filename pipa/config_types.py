"""``params.yaml`` as a typed, frozen ``Config``: what every stage passes down to the library.

``pipa.config.load`` reads the file, validates it (``pipa.config.validate``: every bad key
is reported, naming the fix) and builds a ``Config`` with ``Config.from_params``; past that
point the library trusts it and reads attributes (``cfg.align.beta``), never keys. The
optional keys take their defaults here, in one place, and nothing downstream repeats them.

One dataclass per section of params.yaml, the same names and nesting, so the path of a
parameter from the file to where it acts reads the same at both ends. Sections whose keys
are names the user chooses (models, ablations, settings, lr grids, beam widths per
benchmark) are read-only mappings of typed entries. ``world`` stays the world generator's
own mapping: ``pipa.world`` owns its knobs and defaults (``DEFAULT_WORLD_CFG``) and checks
them itself. Values keep the types the library computed with before the config was typed
(an int stays an int), so a typed config changes no number.

To change a value in code (a study over one knob, a test) use ``dataclasses.replace`` on
the section and the config: ``replace(cfg, align=replace(cfg.align, reduction="mean"))``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

__all__ = ["Ablation", "Align", "Arch", "Config", "Data", "Eval", "Family", "Finetune", "Grid",
           "KtoWeights", "Lora", "Paths", "Pretrain", "Report", "Runtime", "Sampling",
           "Search", "Tokenizer", "frozen", "thawed"]


def frozen(value: Any) -> Any:
    """A read-only deep copy of a YAML value: mappings become ``MappingProxyType``, lists
    tuples. A ``Config`` never shares mutable state with the dict it was built from."""
    if isinstance(value, Mapping):
        return MappingProxyType({k: frozen(v) for k, v in value.items()})
    if isinstance(value, (list, tuple)):
        return tuple(frozen(v) for v in value)
    return value


def thawed(value: Any) -> Any:
    """The plain-dict/list form of a ``frozen`` value (for code that owns a mutable copy)."""
    if isinstance(value, Mapping):
        return {k: thawed(v) for k, v in value.items()}
    if isinstance(value, tuple):
        return [thawed(v) for v in value]
    return value


@dataclass(frozen=True)
class Runtime:
    threads: int              # torch threads: fixed, so CPU results are bit-identical
    workers: int              # forked processes for a cell's independent jobs
    device: str               # auto | cpu | cuda
    launcher: str             # prefix of the training stages' commands (dvc.yaml)
    dtype: str                # weights and decoding
    mixed_precision: str      # auto | fp32 | bf16 (``pipa.config.precision_name``)

    @classmethod
    def from_mapping(cls, m: Mapping) -> Runtime:
        from pipa.config import precision_name

        return cls(threads=int(m["threads"]), workers=int(m["workers"]), device=m["device"],
                   launcher=m["launcher"], dtype=m["dtype"],
                   mixed_precision=precision_name(m["mixed_precision"]))


@dataclass(frozen=True)
class Lora:
    enabled: bool
    r: int
    alpha: float
    dropout: float
    target_modules: tuple[str, ...]

    @classmethod
    def from_mapping(cls, m: Mapping) -> Lora:
        return cls(enabled=bool(m["enabled"]), r=m["r"], alpha=m["alpha"],
                   dropout=m["dropout"], target_modules=tuple(m["target_modules"]))



@dataclass(frozen=True)
class Finetune:
    """``sft`` and ``prior_ft``: continued training on correct (or chosen) solutions."""

    epochs: float
    batch_size: int           # global sequences per optimizer step
    grad_accum: int           # micro-batches per optimizer step
    lr: float
    warmup: int               # steps
    min_lr_ratio: float
    lora: Lora

    @classmethod
    def from_mapping(cls, m: Mapping) -> Finetune:
        return cls(epochs=float(m["epochs"]), batch_size=int(m["batch_size"]),
                   grad_accum=int(m["grad_accum"]), lr=float(m["lr"]),
                   warmup=int(m.get("warmup", 0)), min_lr_ratio=float(m["min_lr_ratio"]),
                   lora=Lora.from_mapping(m["lora"]))


@dataclass(frozen=True)
class KtoWeights:
    desirable: float          # KTO's lambda_D
    undesirable: float        # KTO's lambda_U


@dataclass(frozen=True)
class Align:
    epochs: float
    batch_size: int           # global sequences per step (paired algorithms: half as pairs)
    grad_accum: int
    length_groups: int        # batches of similar length (1: off)
    beta: float
    kto_weights: KtoWeights
    reduction: str            # PIPA's token reduction: sum | mean
    ipo_normalize: bool
    sft_coef: float           # Table 4's added SFT loss
    warmup_ratio: float
    min_lr_ratio: float
    grad_clip: float
    val_problems: int | None  # validation problems that pick the lr (None: all)
    value_head_lr: float | None  # None: the head trains at the policy's lr
    lr_grid: Mapping[str, tuple[float, ...]]  # algorithm (or "default") -> learning rates
    lora: Lora

    @classmethod
    def from_mapping(cls, m: Mapping) -> Align:
        head_lr, val = m.get("value_head_lr"), m.get("val_problems")
        return cls(
            epochs=float(m["epochs"]), batch_size=int(m["batch_size"]),
            grad_accum=int(m["grad_accum"]), length_groups=int(m["length_groups"]),
            beta=float(m["beta"]),
            kto_weights=KtoWeights(float(m["kto_weights"]["desirable"]),
                                   float(m["kto_weights"]["undesirable"])),
            reduction=m["reduction"], ipo_normalize=bool(m["ipo_normalize"]),
            sft_coef=float(m["sft_coef"]), warmup_ratio=float(m["warmup_ratio"]),
            min_lr_ratio=float(m["min_lr_ratio"]), grad_clip=float(m["grad_clip"]),
            val_problems=None if val is None else int(val),
            value_head_lr=None if head_lr is None else float(head_lr),
            lr_grid=MappingProxyType({k: tuple(float(x) for x in v)
                                      for k, v in m["lr_grid"].items()}),
            lora=Lora.from_mapping(m["lora"]))

    def lrs(self, algorithm: str) -> list[float]:
        """The learning rates tried for ``algorithm``: its own grid, else ``default``."""
        return list(self.lr_grid.get(algorithm, self.lr_grid.get("default", ())))


@dataclass(frozen=True)
class Eval:
    batch_size: int
    max_new_tokens: int
    decoding: str             # greedy | beam
    beam: Mapping[str, tuple[int, int]]  # benchmark -> (B1 beams, B2 samples)
    max_steps: int            # step-level beam search: most steps per solution
    stop_strings: tuple[str, ...]
    answer_fallback: str      # real benchmarks: how an answer is found without \boxed{}

    @classmethod
    def from_mapping(cls, m: Mapping) -> Eval:
        return cls(batch_size=int(m["batch_size"]), max_new_tokens=int(m["max_new_tokens"]),
                   decoding=m.get("decoding", "greedy"),
                   beam=MappingProxyType({k: (int(v[0]), int(v[1]))
                                          for k, v in (m.get("beam") or {}).items()}),
                   max_steps=int(m.get("max_steps", 16)),
                   stop_strings=tuple(m.get("stop_strings") or ()),
                   answer_fallback=m.get("answer_fallback", "last_number"))


@dataclass(frozen=True)
class Sampling:
    model: str                # the model family that samples the alignment data
    n_problems: int | None    # training problems to sample on (None: all)
    samples_per_problem: int
    rollouts: int             # continuations per step prefix (Q's resolution)
    temperature: float
    max_new_tokens: int
    batch_size: int
    include_gold: bool        # add each problem's reference solution

    @classmethod
    def from_mapping(cls, m: Mapping) -> Sampling:
        n = m.get("n_problems")
        return cls(model=m["model"], n_problems=None if n is None else int(n),
                   samples_per_problem=int(m["samples_per_problem"]),
                   rollouts=int(m["rollouts"]), temperature=float(m["temperature"]),
                   max_new_tokens=int(m["max_new_tokens"]), batch_size=int(m["batch_size"]),
                   include_gold=bool(m.get("include_gold", False)))


@dataclass(frozen=True)
class Search:
    """Table 5 (beyond the paper, issue #20): the step-level PIPA cells searched with their
    value head, and how (``pipa.search_eval.SearchSpec`` per cell)."""

    settings: tuple[str, ...] = ("unpaired_step",)
    algorithms: tuple[str, ...] = ("pipa_m", "pipa_n")
    problems: int | None = 100        # test problems per benchmark (None: all)
    budgets: tuple[int, ...] = (4, 8)  # N; a beam is B1 = beam_width x B2 = N / B1
    beam_width: int = 2
    temperature: float = 0.8
    max_step_tokens: int = 48
    reference_seeds: tuple[int, ...] = (0,)  # their cells also run the oracle and chance

    @classmethod
    def from_mapping(cls, m: Mapping) -> Search:
        d = cls()
        n = m.get("problems", d.problems)
        return cls(settings=tuple(m.get("settings", d.settings)),
                   algorithms=tuple(m.get("algorithms", d.algorithms)),
                   problems=None if n is None else int(n),
                   budgets=tuple(int(b) for b in m.get("budgets", d.budgets)),
                   beam_width=int(m.get("beam_width", d.beam_width)),
                   temperature=float(m.get("temperature", d.temperature)),
                   max_step_tokens=int(m.get("max_step_tokens", d.max_step_tokens)),
                   reference_seeds=tuple(int(s) for s in
                                         m.get("reference_seeds", d.reference_seeds)))

    def cells(self, models: tuple[str, ...], seeds: tuple[int, ...]) -> list[tuple]:
        """Every (setting, algorithm, model, seed) Table 5 searches."""
        return [(s, a, m, seed) for s in self.settings for a in self.algorithms
                for m in models for seed in seeds]


@dataclass(frozen=True)
class Pretrain:
    steps: int
    batch_size: int
    seq_len: int
    lr: float
    warmup: int
    min_lr_ratio: float
    weight_decay: float
    seed: int | None = None  # the base model's own seed (init, batch order); None: `seed`

    @classmethod
    def from_mapping(cls, m: Mapping) -> Pretrain:
        seed = m.get("seed")
        return cls(steps=int(m["steps"]), batch_size=int(m["batch_size"]),
                   seq_len=int(m["seq_len"]), lr=float(m["lr"]), warmup=int(m["warmup"]),
                   min_lr_ratio=float(m["min_lr_ratio"]),
                   weight_decay=float(m.get("weight_decay", 0.0)),
                   seed=None if seed is None else int(seed))


@dataclass(frozen=True)
class Arch:
    """A from-scratch model's shape (the built-in world; a hub model brings its own, and
    only ``max_len``, the longest sequence trained on, is read for it)."""

    hidden_size: int | None = None
    intermediate_size: int | None = None
    num_layers: int | None = None
    num_heads: int | None = None
    num_kv_heads: int | None = None  # None: num_heads
    max_len: int = 0

    @classmethod
    def from_mapping(cls, m: Mapping) -> Arch:
        return cls(**{k: m[k] for k in ("hidden_size", "intermediate_size", "num_layers",
                                        "num_heads", "num_kv_heads", "max_len") if k in m})


@dataclass(frozen=True)
class Family:
    """``model_families.<name>``: one model column of the tables."""

    family: str | None        # llama | qwen2: the architecture built from scratch
    style: str | None         # the pretraining corpus's solution style
    prompt_format: str        # world | chat
    arch: Arch
    hub_id: str | None = None        # a hub snapshot (the download stage)
    revision: str | None = None
    hub_allow_patterns: tuple[str, ...] | None = None
    path: str | None = None          # where the download stage puts it
    dtype: str | None = None
    gguf_package: str | None = None  # a model exported from an installed wheel

    @classmethod
    def from_mapping(cls, m: Mapping) -> Family:
        patterns = m.get("hub_allow_patterns")
        return cls(family=m.get("family"), style=m.get("style"),
                   prompt_format=m.get("prompt_format", "world"),
                   arch=Arch.from_mapping(m.get("arch") or {}), hub_id=m.get("hub_id"),
                   revision=m.get("revision"),
                   hub_allow_patterns=None if patterns is None else tuple(patterns),
                   path=m.get("path"), dtype=m.get("dtype"), gguf_package=m.get("gguf_package"))


@dataclass(frozen=True)
class Ablation:
    """``ablations.<name>``: one row of Tables 2-4 against its ``baseline``'s main cell."""

    table: int
    setting: str
    algorithm: str
    prior: str                # sft | all | incorrect
    baseline: str

    @classmethod
    def from_mapping(cls, m: Mapping) -> Ablation:
        return cls(table=int(m.get("table", 0)), setting=m.get("setting"),
                   algorithm=m.get("algorithm"), prior=m.get("prior", "sft"),
                   baseline=m.get("baseline"))


@dataclass(frozen=True)
class Data:
    source: str               # builtin (the generated world) | alphamath
    alphamath_path: str | None
    alphamath_hub: Mapping[str, Any]  # repo_id, filename, revision (the download stage)
    benchmark_dir: str | None
    benchmarks: tuple[str, ...]

    @classmethod
    def from_mapping(cls, m: Mapping) -> Data:
        return cls(source=m.get("source", "builtin"), alphamath_path=m.get("alphamath_path"),
                   alphamath_hub=frozen(m.get("alphamath_hub") or {}),
                   benchmark_dir=m.get("benchmark_dir"),
                   benchmarks=tuple(m["benchmarks"]))


@dataclass(frozen=True)
class Paths:
    """What dvc.yaml's stages read (their declared dependencies)."""

    base_models: str
    train_data: str
    val_data: str
    test_data: str


@dataclass(frozen=True)
class Tokenizer:
    vocab_size: int           # the from-scratch models' BPE vocabulary


@dataclass(frozen=True)
class Report:
    benchmark_labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))
    model_labels: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))


@dataclass(frozen=True)
class Grid:
    """The study's design: the cells the pipeline trains and the report reads (the keys of
    the report stage's ``params:`` in dvc.yaml). A ``Config`` is a ``Grid`` and more; the
    report, which needs no other key, takes a ``Grid``."""

    threshold: float          # Q above it: a correct step (as written: names a folder)
    models: tuple[str, ...]
    seeds: tuple[int, ...]
    control: str | None       # the continued-SFT row of every block
    algorithms: Mapping[str, tuple[str, ...]]  # setting -> Table 1 rows
    ablation_models: tuple[str, ...]
    ablations: Mapping[str, Ablation | None]
    sweep_thresholds: tuple[float, ...]  # as written (0.0 and 0 name different folders)
    sweep_algorithm: str | None
    report: Report

    @staticmethod
    def fields_of(p: Mapping) -> dict:
        """The grid's fields from a params mapping. A missing key reads as empty, so that
        ``pipa.reports.grid.check_grid`` can name it."""
        report = p.get("report") or {}
        return {
            "threshold": p.get("threshold"), "models": tuple(p.get("models") or ()),
            "seeds": tuple(int(s) for s in p.get("seeds") or ()),
            "control": p.get("control"),
            "algorithms": MappingProxyType({s: tuple(a or ()) for s, a in
                                            (p.get("algorithms") or {}).items()}),
            "ablation_models": tuple(p.get("ablation_models") or ()),
            "ablations": MappingProxyType({n: None if a is None else Ablation.from_mapping(a)
                                           for n, a in (p.get("ablations") or {}).items()}),
            "sweep_thresholds": tuple(p.get("sweep_thresholds") or ()),
            "sweep_algorithm": p.get("sweep_algorithm"),
            "report": Report(frozen(report.get("benchmark_labels") or {}),
                             frozen(report.get("model_labels") or {}))}

    @classmethod
    def from_params(cls, p: Mapping) -> Grid:
        return cls(**cls.fields_of(p))


@dataclass(frozen=True)
class Config(Grid):
    """All of params.yaml, validated and typed; built by ``pipa.config.load``."""

    seed: int                 # data seed: world, sampling, pairing, validation subset
    runtime: Runtime
    data: Data
    paths: Paths
    world: Mapping[str, Any]  # pipa.world's knobs (merged over its defaults there)
    tokenizer: Tokenizer
    model_families: Mapping[str, Family]
    pretrain: Pretrain
    sampling: Sampling
    sft: Finetune
    prior_ft: Finetune
    align: Align
    eval: Eval
    search: Search = Search()

    @classmethod
    def from_params(cls, p: Mapping) -> Config:
        """Build from a params mapping that ``pipa.config.validate`` accepted."""
        return cls(
            **Grid.fields_of(p),
            seed=int(p["seed"]), runtime=Runtime.from_mapping(p["runtime"]),
            data=Data.from_mapping(p["data"]),
            paths=Paths(**{k: p["paths"][k] for k in ("base_models", "train_data",
                                                      "val_data", "test_data")}),
            world=frozen(p.get("world") or {}),
            tokenizer=Tokenizer(int(p["tokenizer"]["vocab_size"])),
            model_families=MappingProxyType({n: Family.from_mapping(f) for n, f in
                                             p["model_families"].items()}),
            pretrain=Pretrain.from_mapping(p["pretrain"]),
            sampling=Sampling.from_mapping(p["sampling"]),
            sft=Finetune.from_mapping(p["sft"]), prior_ft=Finetune.from_mapping(p["prior_ft"]),
            align=Align.from_mapping(p["align"]), eval=Eval.from_mapping(p["eval"]),
            search=Search.from_mapping(p.get("search") or {}))

    def family(self, model: str) -> Family:
        return self.model_families[model]

    def finetune(self, section: str) -> Finetune:
        """``sft`` or ``prior_ft`` by name (the SFT stage serves both)."""
        if section not in ("sft", "prior_ft"):
            raise ValueError(f"finetune section must be sft or prior_ft, got {section!r}")
        return getattr(self, section)
