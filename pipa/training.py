"""The one training loop, ``fit``, and the accelerate helpers around it.

``fit`` runs any objective: pretraining (every token), SFT and prior fine-tuning (response
tokens of chosen solutions), and alignment (``pipa.align.alignment_step`` calling a loss of ``pipa.losses.ALGORITHMS``). The
trainer never branches on an algorithm's name; it reads the algorithm's spec (which data
kind it needs, whether it needs the value head or KTO's mismatched pairs).

The loop runs under ``accelerate`` (one process on the CPU, or ``accelerate launch`` over
several GPUs). How a batch is split (the plan itself: ``pipa.batching``):

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
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch

from pipa.config import ConfigError
from pipa.hardware import autocast, resolve_device
from pipa.io import atomic_path
from pipa.models import token_logps


class NonFiniteLoss(RuntimeError):
    """Raised when a loss or a logged quantity is NaN/inf; names step, samples and quantity."""


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

    ``params_to_train``: tensors, or torch param groups (dicts with ``params`` and perhaps
    their own ``lr``); the schedule scales every group's lr alike, the gradient norm is
    clipped over all of them together.

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
    params_to_train = list(params_to_train)
    if params_to_train and isinstance(params_to_train[0], dict):
        # param groups, e.g. the value head at a learning rate of its own (align.value_head_lr)
        groups = [{**g, "params": [p for p in g["params"] if p.requires_grad]}
                  for g in params_to_train]
        params_to_train = [p for g in groups for p in g["params"]]
    else:
        groups = params_to_train = [p for p in params_to_train if p.requires_grad]
    opt = torch.optim.AdamW(groups, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95))
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
