"""Training-step time of the precision `runtime.mixed_precision: auto` picks on this machine,
against the other one (fp32 vs bf16 autocast), measured side by side in one run.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_precision.py [--steps 12] [--threads 1]

The step is pretraining's (the stage that dominates the main job): the default `ds` family
of params.yaml (random init, `pipa.models.build_model`), a batch of
`pretrain.batch_size` x `pretrain.seq_len` tokens, forward under `hardware.autocast`,
backward, AdamW, one thread as in the `base` stage's workers. The two precisions alternate
step by step (so drift in the machine's speed hits both alike); the median is reported.
Last line: `chosen=<auto's pick> ratio_other_over_chosen=X.XX`: above 1 means auto picked the
faster one.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipa import config as C
from pipa.hardware import autocast, machine, resolve_precision
from pipa.models import build_model


class _Tok:  # build_model reads the special tokens' ids only
    pad_token_id, bos_token_id, eos_token_id = 0, 1, 2


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--params", default=str(ROOT / "params.yaml"))
    ap.add_argument("--steps", type=int, default=12, help="timed steps per precision")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args(argv)
    cfg = C.load(args.params)
    torch.set_num_threads(args.threads)
    fam = cfg.family("ds")
    vocab = int(cfg.tokenizer.vocab_size)
    bsz, seq_len = int(cfg.pretrain.batch_size), int(cfg.pretrain.seq_len)
    chosen = resolve_precision("auto", "cpu")
    other = "fp32" if chosen == "bf16" else "bf16"
    batch = torch.randint(0, vocab, (bsz, seq_len), generator=torch.Generator().manual_seed(0))
    runs = {}
    for name in (chosen, other):
        model = build_model(fam.family, fam.arch, vocab, _Tok(), seed=0).train()
        runs[name] = (model, torch.optim.AdamW(model.parameters(), lr=1e-3), [])

    def step(name: str) -> float:
        model, opt, _ = runs[name]
        started = time.perf_counter()
        with autocast(name):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - started

    for name in runs:  # warm-up: first-call allocations and kernel selection
        step(name)
        step(name)
    for _ in range(args.steps):
        for name in (chosen, other):
            runs[name][2].append(step(name))
    info = machine()
    print(f"machine: {info['cpu']} (capability {info['capability']}, native bf16: "
          f"{info['bf16_native']}), {args.threads} thread(s), batch {bsz}x{seq_len}")
    medians = {name: statistics.median(times) for name, (_, _, times) in runs.items()}
    for name, med in medians.items():
        print(f"{name}: {med * 1000:.0f} ms per step (median of {args.steps})")
    print(f"chosen={chosen} ratio_other_over_chosen={medians[other] / medians[chosen]:.2f}")


if __name__ == "__main__":
    main()
