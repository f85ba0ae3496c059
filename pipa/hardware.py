"""The machine a run computes on: threads and seeds, the device, the precision its hardware
runs natively (``runtime.mixed_precision: auto``), and a record of what ran.

Same params, seed and machine give the same bytes (``setup_runtime``); across CPU types the
kernels differ, so every stage records ``machine()`` beside its numbers.
"""

from __future__ import annotations

import contextlib
import random

import torch

from pipa.config import ConfigError, precision_name


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
    return cpu_bf16_kernels() != "no"


def cpu_bf16_kernels() -> str:
    """Which native bf16 matmul units the CPU offers: ``amx``, ``avx512_bf16`` or ``no``.

    Recorded in ``machine()`` because the two kinds of unit are different kernels (oneDNN
    picks AMX tiles where it can), so an Intel with AMX and one with AVX512-BF16 alone, which
    share a model name and torch's capability string, are different machine types for
    ``pipa.compare``'s byte-identity check."""
    if not torch.backends.cpu.get_cpu_capability().startswith("AVX512"):
        return "no"  # kernels capped below AVX512 (ATEN_CPU_CAPABILITY=avx2): bf16 emulated
    for kind, probe in (("amx", "_is_amx_tile_supported"),  # torch.cpu, private
                        ("avx512_bf16", "_is_avx512_bf16_supported")):
        if getattr(torch.cpu, probe, lambda: False)():
            return kind
    return "no"


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
            "bf16_native": cpu_bf16_kernels(), "torch": torch.__version__}


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
