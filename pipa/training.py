"""The one training loop, and the batching around it.

``fit`` runs any objective: pretraining (every token), SFT and prior fine-tuning (response
tokens of chosen solutions), and alignment (``pipa.align.alignment_step`` calling a loss of ``pipa.losses.ALGORITHMS``). The
trainer never branches on an algorithm's name; it reads the algorithm's spec (which data
kind it needs, whether it needs the value head or KTO's mismatched pairs).

The loop runs under ``accelerate`` (one process on the CPU, or ``accelerate launch`` over
several GPUs). How a batch is split:

* ``batch_size`` in params is the **global** batch: sequences per optimizer step, summed
  over gradient-accumulation micro-batches and processes (paired algorithms: half as many
  pairs). ``n_steps`` counts optimizer steps of that global batch.
* Every process builds the same plan of global batches (``batch_plan``, same seed). Each
  global batch is cut into ``grad_accum`` consecutive chunks; process ``r`` of ``W`` takes
  ``chunk[r::W]`` of each. So one process sees micro-batches of
  ``batch_size / (grad_accum × W)`` sequences, and the batch must divide evenly
  (``ConfigError`` otherwise).
* ``fit`` calls ``step_fn`` once per micro-batch, backpropagates ``loss / grad_accum``
  (``accelerator.backward``) and steps the optimizer once per ``grad_accum`` micro-batches;
  across processes the gradients are averaged (DDP / DeepSpeed). The update is therefore
  that of the mean of the ``grad_accum × W`` micro-batch losses: for a loss that is a mean
  over sequences (every loss here), with equal micro-batches, the full-batch mean.

With one process and ``grad_accum = 1`` the micro-batch is the global batch and the loop is
the plain PyTorch loop, bit for bit (``tests/test_training.py``).
"""

from __future__ import annotations

import contextlib
import math
import random
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from pipa.config import ConfigError, precision_name
from pipa.io import atomic_path
from pipa.models import token_logps


class NonFiniteLoss(RuntimeError):
    """Raised when a loss or a logged quantity is NaN/inf; names step, samples and quantity."""


def setup_runtime(threads: int, seed: int) -> None:
    """Same params and seed, same numbers: fixed thread count, deterministic kernels.

    On CUDA, deterministic cuBLAS needs ``CUBLAS_WORKSPACE_CONFIG`` set before the first
    matmul; it is set here unless the environment already has it (no effect on the CPU).
    """
    import os

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(threads)
    if torch.cuda.is_available():
        torch.use_deterministic_algorithms(True)
    else:
        # The public call also imports torch._inductor (0.8 s per process, paid by every
        # stage and grid cell) only to set the compiler's flag; nothing here compiles, and
        # on the CPU the eager flag is all that matters.
        torch._C._set_deterministic_algorithms(True, warn_only=False)
    random.seed(seed)
    torch.manual_seed(seed)


def resolve_device(spec: str = "auto") -> torch.device:
    """``runtime.device`` as a torch device: ``auto`` is the GPU when torch sees one, else
    the CPU; ``cpu`` keeps a GPU box on the CPU (the default's numbers are CPU numbers)."""
    from pipa.config import valid_device

    if not valid_device(spec):
        raise ConfigError(f"runtime.device={spec!r}; valid: auto, cpu, cuda")
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"runtime.device={spec!r} but torch sees no GPU (torch "
                          f"{torch.__version__}, a CPU build?); set runtime.device: auto or cpu")
    return torch.device(spec)


# Mixed precision of training forwards (``runtime.mixed_precision`` resolved): autocast dtype.
MIXED_PRECISION = {"fp32": None, "bf16": torch.bfloat16}


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` runs bf16 matmuls natively: a CUDA GPU with bf16, or a CPU with AMX
    or AVX512-BF16. Elsewhere (an AVX2-only CPU) bf16 autocast is emulated, 10-12x slower
    than fp32 for the default's tiny models (measured)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return False  # kernels capped below AVX512 (ATEN_CPU_CAPABILITY=avx2): bf16 emulated
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")  # torch.cpu, private
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def resolve_precision(mixed_precision, device: torch.device | str = "cpu") -> str:
    """``runtime.mixed_precision`` as what runs on ``device``: ``fp32`` or ``bf16``.

    ``auto`` is bf16 where the hardware runs it natively (``native_bf16``), fp32 elsewhere;
    ``fp32`` / ``bf16`` (and the old ``no``) are taken as written."""
    name = precision_name(mixed_precision)
    if name == "auto":
        return "bf16" if native_bf16(device) else "fp32"
    return name


def machine() -> dict[str, str]:
    """What computed a stage's numbers, recorded beside them: numbers differ between CPU
    types (kernels, native bf16 or not), so a reader must be able to tell which made what."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            cpu = next((line.split(":", 1)[1].strip() for line in fh
                        if line.startswith("model name")), cpu)
    except OSError:
        pass
    return {"cpu": cpu, "capability": torch.backends.cpu.get_cpu_capability(),
            "bf16_native": "yes" if native_bf16("cpu") else "no", "torch": torch.__version__}


def autocast(mixed_precision, device: torch.device | str = "cpu"):
    """Context for the forward passes that train, and for the prior's log-probs that the
    losses compare with them: ``torch.autocast`` to bf16 when ``mixed_precision`` resolves
    to bf16 on ``device`` (``resolve_precision``).

    Weights, gradients and optimizer state stay in their own dtype (fp32 masters in the
    default); matmuls run in bf16 (1.3-1.8x faster on a CPU with AVX512-BF16/AMX, as on any
    recent GPU), and ``token_logps`` still reduces in fp32. Decoding is not autocast: on
    the CPU it is slower in bf16 (small matrices), so evaluation runs in the weights' dtype.
    """
    dtype = MIXED_PRECISION[resolve_precision(mixed_precision, device)]
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=torch.device(device).type, dtype=dtype)


# ---------------------------------------------------------------- examples and batches


@dataclass
class Example:
    """One (prompt, response) sequence with its per-token labels."""

    rid: str
    sid: str
    prompt_ids: list[int]
    response_ids: list[int]
    token_labels: list[int]
    step_ids: list[int]
    correct: bool
    pair: int | None = None


def collate(examples: list[Example], pad_id: int,
            prior: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    """Right-pad a list of examples into (N, L) tensors aligned on token positions.

    Position t of ``response_mask``/``token_labels``/``prior_logps`` describes token
    ``input_ids[:, t]``, the same convention as ``token_logps`` (log-prob of token t given
    the tokens before it).
    """
    length = max(len(e.prompt_ids) + len(e.response_ids) for e in examples)
    n = len(examples)
    input_ids = torch.full((n, length), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((n, length), dtype=torch.long)
    response_mask = torch.zeros((n, length), dtype=torch.bool)
    labels = torch.zeros((n, length), dtype=torch.float32)
    step_ids = torch.full((n, length), -1, dtype=torch.long)
    prior_logps = torch.zeros((n, length), dtype=torch.float32)
    for i, e in enumerate(examples):
        p, r = len(e.prompt_ids), len(e.response_ids)
        input_ids[i, : p + r] = torch.tensor(e.prompt_ids + e.response_ids)
        attention_mask[i, : p + r] = 1
        response_mask[i, p : p + r] = True
        labels[i, p : p + r] = torch.tensor(e.token_labels, dtype=torch.float32)
        step_ids[i, p : p + r] = torch.tensor(e.step_ids)
        if prior is not None:
            cached = prior[e.sid]
            if cached.numel() != r:
                raise ValueError(
                    f"prior log-probs of {e.sid} have {cached.numel()} tokens but the response "
                    f"has {r}: the prior cache was made with another tokenizer; re-run the "
                    "prior stage (dvc repro prior)"
                )
            prior_logps[i, p : p + r] = cached
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "response_mask": response_mask,
        "token_labels": labels,
        "step_ids": step_ids,
        "prior_logps": prior_logps,
        "is_correct": torch.tensor([e.correct for e in examples]),
    }


def to_device(batch: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    """The collated batch (cached prior log-probs included) on ``device``; a no-op on the CPU."""
    return {k: v.to(device) for k, v in batch.items()}


def device_of(module: torch.nn.Module) -> torch.device:
    """Where a module's parameters live (after ``accelerator.prepare`` moved them)."""
    return next(module.parameters()).device


def mismatched(examples: list[Example]) -> list[Example]:
    """KTO's mismatched pairs (x_i, y_{i+1}), built inside the batch as its authors do.

    A pair's ``sid`` names both solutions (``<sid_i>~<sid_i+1>``): the key of its cached
    reference log-probs (``mismatched_examples``). A micro-batch of one sequence has no
    mismatched pair (its "(x_1, y_2)" would be the matched (x_1, y_1)): refused, as TRL does.
    """
    if len(examples) < 2:
        raise ConfigError(
            f"KTO's mismatched pairs need at least 2 sequences per micro-batch, got "
            f"{len(examples)}: raise align.batch_size or lower align.grad_accum (each "
            "process runs batch_size / (grad_accum x processes) sequences per micro-batch)")
    shifted = examples[1:] + examples[:1]
    return [
        Example(rid=a.rid + "~" + b.rid, sid=a.sid + "~" + b.sid, prompt_ids=a.prompt_ids,
                response_ids=b.response_ids, token_labels=b.token_labels, step_ids=b.step_ids,
                correct=b.correct)
        for a, b in zip(examples, shifted)
    ]


def step_sequences(units: list, data_kind: str) -> list[Example]:
    """The sequences one micro-batch scores: paired units give the chosen responses, then
    the rejected ones; unpaired units are the sequences."""
    if data_kind == "paired":
        return [c for c, _ in units] + [r for _, r in units]
    return list(units)


def mismatched_examples(plan: Iterable[list], data_kind: str) -> list[Example]:
    """Every mismatched pair that a batch plan's micro-batches will build, once each.

    KTO's z0 needs the reference on (x_i, y_{i+1}); the pairs depend on the batches (seed,
    batch size), so no per-dataset cache holds them, but a run's plan is fixed before it
    starts: the cell scores them all once, before training, and the loop reads them like
    the cached prior (the reference never runs inside the loop)."""
    seen: dict[str, Example] = {}
    for units in plan:
        for e in mismatched(step_sequences(units, data_kind)):
            seen.setdefault(e.sid, e)
    return list(seen.values())


def batch_plan(examples: list[Example], data_kind: str, correct_only: bool,
               batch_size: int, n_steps: int, seed: int, *, grad_accum: int = 1,
               num_processes: int = 1, process_index: int = 0,
               length_groups: int = 1) -> Iterator[list[Example]]:
    """Yield this process's micro-batches: ``n_steps × grad_accum`` of them.

    The plan is one of ``n_steps`` global batches of ``batch_size`` sequences, reshuffled
    every epoch, identical on every process (same seed). Paired algorithms get
    batch_size/2 (chosen, rejected) pairs, so every algorithm of a setting sees the same
    number of sequences per step and the same number of steps. Each global batch is cut
    into ``grad_accum`` consecutive chunks and process ``process_index`` of
    ``num_processes`` takes ``chunk[process_index::num_processes]`` of each: one process's
    micro-batch holds ``batch_size / (grad_accum × num_processes)`` sequences. With
    ``grad_accum = num_processes = 1`` each micro-batch is the whole global batch.

    ``length_groups = k > 1`` groups by length, as transformers' ``group_by_length`` does:
    each epoch's shuffled order is cut into runs of k batches, each run sorted by length and
    cut into batches again, and the batches of a run shuffled. Batches then hold sequences
    of similar length (on the default's data: 10% padding instead of 28% for k = 4, i.e.
    a fifth fewer tokens through the model) while every sequence is still seen once per
    epoch in a seeded random order.
    """
    rng = random.Random(seed)
    if data_kind == "paired":
        by_pair: dict[int, dict[bool, Example]] = {}
        for e in examples:
            if e.pair is None:
                raise ValueError(f"record {e.rid} has no pair index: paired data expected")
            by_pair.setdefault(e.pair, {})[e.correct] = e
        units = [(d[True], d[False]) for _, d in sorted(by_pair.items()) if len(d) == 2]
        per_batch = max(1, batch_size // 2)
    else:
        units = [e for e in examples if e.correct or not correct_only]
        per_batch = batch_size
    split = grad_accum * num_processes
    if grad_accum < 1 or num_processes < 1 or per_batch % split:
        unit = "pairs" if data_kind == "paired" else "sequences"
        raise ConfigError(
            f"batch_size={batch_size} ({per_batch} {unit} per step) does not split into "
            f"grad_accum={grad_accum} x {num_processes} processes equal micro-batches; make "
            f"batch_size a multiple of {split * (2 if data_kind == 'paired' else 1)} (or "
            "change grad_accum / the number of processes)"
        )
    if not units:
        raise ValueError("no training data for this algorithm/setting after filtering")
    chunk = per_batch // grad_accum
    order: list = []
    for _ in range(n_steps):
        if len(order) < per_batch:
            fresh = list(units)
            rng.shuffle(fresh)
            if length_groups > 1:
                fresh = _group_by_length(fresh, per_batch, length_groups, rng)
            order.extend(fresh)
        batch, order = order[:per_batch], order[per_batch:]
        for k in range(grad_accum):
            yield batch[k * chunk : (k + 1) * chunk][process_index::num_processes]


def _unit_length(unit) -> int:
    pair = unit if isinstance(unit, tuple) else (unit,)
    return max(len(e.prompt_ids) + len(e.response_ids) for e in pair)


def _group_by_length(units: list, per_batch: int, k: int, rng: random.Random) -> list:
    out: list = []
    run = per_batch * k
    for start in range(0, len(units), run):
        ordered = sorted(units[start : start + run], key=_unit_length, reverse=True)
        batches = [ordered[i : i + per_batch] for i in range(0, len(ordered), per_batch)]
        # A short last batch of the epoch stays last: the consumer tops it up with the
        # next epoch's sequences, as without grouping.
        full = [b for b in batches if len(b) == per_batch]
        rng.shuffle(full)
        out.extend(x for b in full + [b for b in batches if len(b) < per_batch] for x in b)
    return out


def steps_for(n_sequences: int, batch_size: int, epochs: float) -> int:
    return max(1, math.ceil(epochs * n_sequences / batch_size))


# ---------------------------------------------------------------- forward helpers


def forward_logps(policy, batch: dict[str, torch.Tensor]):
    """Per-token log-probs (N, L) and value logits aligned the same way (or None).

    ``policy`` is a ``PolicyWithValueHead``: position t holds log pi(token t | tokens < t)
    and the value logit from the hidden state that predicts token t, as the paper defines g_t.
    """
    logits, value = policy(batch["input_ids"], batch["attention_mask"])
    return token_logps(logits, batch["input_ids"]), value


def check_finite(step: int, ids: list[str], **quantities) -> None:
    for name, value in quantities.items():
        if value is None or not torch.is_tensor(value):
            continue
        if not torch.isfinite(value).all():
            shown = ", ".join(ids[:8]) + (" ..." if len(ids) > 8 else "")
            raise NonFiniteLoss(
                f"non-finite {name} at step {step} (samples: {shown}); lower the learning "
                "rate or check the inputs of these samples"
            )


# ---------------------------------------------------------------- the loop


def cosine_lr(step: int, total: int, warmup: int, min_ratio: float) -> float:
    """Multiplier of the peak lr: linear warmup, then cosine decay to ``min_ratio``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))


def make_accelerator(grad_accum: int = 1, batch_size: int | None = None, device: str = "auto"):
    """The ``accelerate.Accelerator`` of a training stage (plain ``python`` or ``accelerate launch``).

    One CPU process: device ``cpu``, no wrapping, so ``fit`` is the plain PyTorch loop.
    ``device`` is ``runtime.device``: ``cpu`` keeps the stage on the CPU on a GPU box; any
    other value lets accelerate pick (the process's GPU, or the CPU where there is none).
    ``batch_size`` (the global batch, in sequences) is checked to split into
    ``grad_accum × num_processes`` micro-batches; under DeepSpeed it also fills
    ``train_micro_batch_size_per_gpu`` (there is no DataLoader for accelerate to read it from).
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedType

    if isinstance(grad_accum, bool) or not isinstance(grad_accum, int) or grad_accum < 1:
        raise ConfigError(f"grad_accum={grad_accum!r} must be a positive integer")
    resolve_device(device)  # a clear error for cuda on a machine without one
    accelerator = Accelerator(gradient_accumulation_steps=grad_accum, cpu=device == "cpu")
    # accelerate lets ACCELERATE_GRADIENT_ACCUMULATION_STEPS (set by `accelerate launch`
    # from a config's gradient_accumulation_steps) override the argument: params decide.
    if accelerator.gradient_accumulation_steps != grad_accum:
        raise ConfigError(
            f"the accelerate config/environment sets gradient_accumulation_steps="
            f"{accelerator.gradient_accumulation_steps} but params say grad_accum={grad_accum}; "
            "remove gradient_accumulation_steps from the accelerate config (params.yaml's "
            "<section>.grad_accum sets it)"
        )
    if batch_size is not None:
        split = grad_accum * accelerator.num_processes
        if batch_size % split:
            raise ConfigError(
                f"batch_size={batch_size} (the global batch) does not split into grad_accum="
                f"{grad_accum} x {accelerator.num_processes} processes equal micro-batches; "
                f"make it a multiple of {split}"
            )
        if accelerator.distributed_type == DistributedType.DEEPSPEED:
            ds_config = accelerator.state.deepspeed_plugin.deepspeed_config
            if ds_config.get("train_micro_batch_size_per_gpu", "auto") == "auto":
                ds_config["train_micro_batch_size_per_gpu"] = batch_size // split
    return accelerator


def end_distributed() -> None:
    """Close the process group that ``accelerate launch`` opened, once a stage's last
    collective is done (NCCL warns of leaked resources otherwise); nothing without one."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def is_main_process() -> bool:
    """Whether this is the process that writes outputs (always true without ``accelerate launch``)."""
    from accelerate import PartialState

    return PartialState().is_main_process


@contextlib.contextmanager
def main_process_path(accelerator, final: str | Path) -> Iterator[Path]:
    """``atomic_path(final)`` on the main process; a throw-away scratch path on the others.

    Only the main process writes a stage's outputs (another process entering
    ``atomic_path`` would also delete the main process's temporary as stale).
    """
    if accelerator.is_main_process:
        with atomic_path(final) as tmp:
            yield tmp
    else:
        with tempfile.TemporaryDirectory(prefix="pipa-scratch-") as scratch:
            yield Path(scratch) / Path(final).name


def _check_finite_everywhere(accelerator, step: int, ids: list[str], **quantities) -> None:
    """``check_finite`` on this process's micro-batch; with several processes every process
    raises as soon as one of them found a non-finite value (none is left waiting)."""
    error = None
    try:
        check_finite(step, ids, **quantities)
    except NonFiniteLoss as err:
        error = err
    if accelerator.num_processes > 1:
        flag = torch.tensor([0.0 if error is None else 1.0], device=accelerator.device)
        if float(accelerator.reduce(flag, "sum")) > 0 and error is None:
            error = NonFiniteLoss(
                f"non-finite {', '.join(quantities)} at step {step} on another process; lower "
                "the learning rate or check that process's samples (named in its error)"
            )
    if error is not None:
        raise error


def _global_means(accelerator, values: dict[str, list[float]]) -> dict[str, float]:
    """Mean of each logged quantity over micro-batches (NaN entries left out), and over
    processes when there are several: the value of the global batch."""
    sums = {k: sum(v for v in vs if not math.isnan(v)) for k, vs in values.items()}
    counts = {k: sum(1 for v in vs if not math.isnan(v)) for k, vs in values.items()}
    if accelerator.num_processes > 1:
        keys = list(values)
        local = torch.tensor([sums[k] for k in keys] + [counts[k] for k in keys],
                             dtype=torch.float64, device=accelerator.device)
        total = accelerator.reduce(local, "sum").tolist()
        sums = dict(zip(keys, total[: len(keys)]))
        counts = dict(zip(keys, total[len(keys) :]))
    return {k: sums[k] / counts[k] if counts[k] else float("nan") for k in values}


def _check_fsdp_dtypes(model: torch.nn.Module) -> None:
    """FSDP flattens each unit's parameters into one tensor, so they must share a dtype."""
    dtypes = sorted({str(p.dtype).removeprefix("torch.") for p in model.parameters()})
    if len(dtypes) > 1:
        raise ConfigError(
            f"FSDP needs one parameter dtype, the model has {', '.join(dtypes)} (bf16 weights "
            "with float32 LoRA adapters or value head); set runtime.dtype: float32 under FSDP "
            "(its bf16 mixed precision computes in bf16 over float32 shards), or use "
            "configs/accelerate/deepspeed_zero2.yaml"
        )


def full_weights_holder(accelerator, policy: torch.nn.Module):
    """``(holder, on_trained)``: the module that holds the trained weights after ``fit``,
    in full on every process, and the hook to pass to ``fit(on_trained=...)``.

    Replicated parameters (one process, DDP, DeepSpeed ZeRO-2): ``policy`` itself (the
    prepared wrapper shares its parameters) and no hook. FSDP: each process keeps only a
    shard of every unit, and the wrapped ``policy`` is no longer a plain module, so the
    holder is a copy of ``policy`` made now, before training, and the hook gathers the
    full state dict (``torch.distributed.checkpoint``, on every process) into it and moves
    it to the process's device: saving, LoRA merging and validation then read plain,
    complete weights, as in every other setting.
    """
    from accelerate.utils import DistributedType

    if accelerator.distributed_type != DistributedType.FSDP:
        return policy, None
    import copy

    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    holder = copy.deepcopy(policy)

    def gather(prepared: torch.nn.Module) -> None:
        state = get_model_state_dict(prepared, options=StateDictOptions(full_state_dict=True))
        holder.load_state_dict(state)
        holder.to(accelerator.device)

    return holder, gather


def fit(params_to_train, step_fn: Callable[..., tuple], n_steps: int, *, lr: float,
        warmup: int = 0, min_lr_ratio: float = 1.0, weight_decay: float = 0.0,
        grad_clip: float = 1.0, live=None, prefix: str = "train", desc: str = "train",
        progress: bool = True, grad_accum: int = 1, accelerator=None,
        model: torch.nn.Module | None = None, mixed_precision: str = "fp32",
        on_trained: Callable[[torch.nn.Module], None] | None = None) -> dict[str, float]:
    """Run ``n_steps`` optimizer steps of ``grad_accum`` micro-batches each.

    ``step_fn`` runs one micro-batch and returns (loss, logs, ids, n_tokens); it is called
    as ``step_fn(step)``, or ``step_fn(step, prepared_model)`` when ``model`` is given:
    then ``model`` and the optimizer go through ``accelerator.prepare`` together (moved to
    ``accelerator.device``, wrapped for DDP/DeepSpeed when launched on several processes)
    and the step function must call the module it receives. Without ``model`` nothing is
    moved (``pretrain``). ``accelerator`` defaults to ``make_accelerator(grad_accum)``.

    ``step_fn`` runs under ``autocast(mixed_precision)`` (the backward pass does not).
    Each micro-batch backpropagates ``loss / grad_accum``; the optimizer and the lr schedule
    step once per ``grad_accum`` micro-batches, after clipping the global gradient norm.
    A non-finite loss (or ``loss*`` log) of any micro-batch, or a non-finite gradient norm,
    raises ``NonFiniteLoss`` naming the step and the samples, before the optimizer steps.
    Logged values are means over the step's micro-batches and processes; ``tokens_per_s``
    (returned, never logged: wall clock would change the cached bytes) counts every token of
    the global batch over the whole step. Only the main process logs through dvclive
    (``live``). ``on_trained(prepared)`` runs on every process after
    the last step, while the prepared module is alive (``full_weights_holder`` gathers FSDP
    shards there). Returns the last step's logs.
    """
    from accelerate.utils import DistributedType
    from tqdm import tqdm

    if accelerator is None:
        accelerator = make_accelerator(grad_accum)
    # The gradient-accumulation state is shared by every Accelerator of the process.
    accelerator.gradient_accumulation_steps = grad_accum
    params_to_train = [p for p in params_to_train if p.requires_grad]
    opt = torch.optim.AdamW(params_to_train, lr=lr, weight_decay=weight_decay,
                            betas=(0.9, 0.95))
    if model is not None:
        if accelerator.distributed_type == DistributedType.FSDP:
            _check_fsdp_dtypes(model)
        prepared, accel_opt = accelerator.prepare(model, opt)
    else:
        prepared, accel_opt = None, accelerator.prepare(opt)
    if accelerator.gradient_accumulation_steps != grad_accum:  # DeepSpeed config overrode it
        raise ConfigError(
            f"the DeepSpeed config sets gradient_accumulation_steps="
            f"{accelerator.gradient_accumulation_steps} but params say grad_accum={grad_accum}; "
            "remove it from the accelerate/DeepSpeed config (params decide)"
        )
    # Stepped by hand once per optimizer step (a prepared scheduler would step once per
    # process); it sets the lr of the optimizer's own param groups, which DeepSpeed shares.
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: cosine_lr(s, n_steps, warmup, min_lr_ratio)
    )
    clip_params = (list(prepared.parameters())
                   if prepared is not None and accelerator.distributed_type == DistributedType.FSDP
                   else params_to_train)
    models = () if prepared is None else (prepared,)  # no_sync on the non-final micro-batches
    main = accelerator.is_main_process
    live = live if main else None
    accelerator.step = 0  # micro-batch counter of accelerator.accumulate: one per fit
    for p in params_to_train:
        p.grad = None
    last: dict[str, float] = {}
    bar = tqdm(range(n_steps), desc=desc, disable=not progress or not main, mininterval=2.0,
               dynamic_ncols=True)
    try:
        for step in bar:
            started = time.perf_counter()
            values: dict[str, list[float]] = {}
            n_tokens, step_ids = 0, []
            for _ in range(grad_accum):
                with accelerator.accumulate(*models):
                    with autocast(mixed_precision, accelerator.device):
                        loss, logs, ids, micro_tokens = (step_fn(step) if prepared is None
                                                         else step_fn(step, prepared))
                    _check_finite_everywhere(
                        accelerator, step, ids, loss=loss,
                        **{k: v for k, v in logs.items() if k.startswith("loss")})
                    accelerator.backward(loss)
                values.setdefault("loss", []).append(float(loss.detach()))
                for k, v in logs.items():
                    values.setdefault(k, []).append(float(v))
                n_tokens += micro_tokens
                step_ids.extend(ids)
            grad_norm = accelerator.clip_grad_norm_(clip_params, grad_clip)
            if grad_norm is not None and not torch.is_tensor(grad_norm):
                grad_norm = torch.tensor(float(grad_norm))
            check_finite(step, step_ids, gradient_norm=grad_norm)  # global: same everywhere
            current_lr = opt.param_groups[0]["lr"]
            accel_opt.step()
            sched.step()
            accel_opt.zero_grad(set_to_none=True)
            elapsed = time.perf_counter() - started
            if accelerator.num_processes > 1:
                n_tokens = int(accelerator.reduce(
                    torch.tensor([n_tokens], device=accelerator.device), "sum").item())
            last = _global_means(accelerator, values)
            last.update({"lr": current_lr, "tokens_per_s": n_tokens / max(elapsed, 1e-9)})
            if live is not None:
                for name, value in last.items():
                    # Throughput is wall clock: logged, it would make every run's dvclive
                    # folder (a cached output) different bytes. The progress bar shows it.
                    if math.isfinite(value) and name != "tokens_per_s":
                        live.log_metric(f"{prefix}/{name}", value)
                live.next_step()
            if step % 10 == 0:
                bar.set_postfix(loss=f"{last['loss']:.4f}")
        if on_trained is not None:
            on_trained(prepared)
    finally:
        # Drop accelerate's references to the prepared model/optimizer (align_cell trains
        # one model per lr); the caller keeps its own, unwrapped, module.
        accelerator.free_memory()
    return last
