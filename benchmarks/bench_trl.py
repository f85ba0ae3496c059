"""Training tokens/s of our DPO and KTO steps vs TRL's DPOTrainer and KTOTrainer.

    OMP_NUM_THREADS=1 python benchmarks/bench_trl.py [--steps 10] [--threads 1]

TRL is a baseline for this benchmark only (``pip install -e '.[bench]'``). Same tiny model
(``models/sft/ds`` if present, else the default ``ds`` family built from params.yaml), same
tokenizer, same world data (gold solution vs wrong final answer), same batch
(``align.batch_size`` sequences: DPO 16 pairs, KTO 32 unpaired completions), one epoch of
``--steps`` steps each. Our side: ``align.alignment_step`` with the cached prior
(computed once, its time reported separately) and the body of ``training.fit``. TRL runs
with its default config plus ``use_cpu=True, report_to="none", save_strategy="no"``, the
batch size and step count above, ``ref_model`` a frozen copy of the model; its defaults
include bf16 autocast and gradient checkpointing, so it is also run "matched" (fp32, no
checkpointing). Step times come from a callback (``on_step_begin`` -> ``on_step_end``);
tokens/s = mean tokens per step (prompt + response of every sequence, our tokenization;
identical data per epoch on both sides) / median step time after ``--warmup`` steps.
The last line is ``trl_speedup dpo=X.XX kto=Y.YY``: our training-step tokens/s over TRL's,
both at their defaults (ours: params' ``runtime.mixed_precision``, bf16 autocast; also run
in fp32 against TRL "matched"). The prior cache is computed once per dataset and shared by every grid cell
(algorithms x seeds x lrs); the table also shows the worst case, its time charged to this
one epoch alone, and the speedups against TRL at matched precision.
"""

from __future__ import annotations

import argparse
import copy
import logging
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_step_time import load_or_build, train_step, world_records

from pipa import config as C
from pipa.align import alignment_step, loss_params
from pipa.batching import batch_plan, collate, mismatched_examples
from pipa.examples import build_examples
from pipa.losses import ALGORITHMS
from pipa.prior import response_logps
from pipa.value_head import PolicyWithValueHead
from pipa.world import format_prompt


def ours(spec, base, tok, examples, hparams, bsz: int, n_steps: int,
         precision: str) -> tuple[list, list, float]:
    """Step times and tokens of ``n_steps`` steps of our trainer; plus the prior cache time."""
    t0 = time.perf_counter()
    prior = response_logps(base, tok, examples, batch_size=64, mixed_precision=precision)
    plan = list(batch_plan(examples, spec.data_kind, spec.correct_only, bsz, n_steps, seed=0))
    # As align.prepare_cell: the reference's log-probs of KTO's mismatched pairs are scored
    # once before training (charged to the prior's time, like the prior cache).
    mismatched_prior = (response_logps(base, tok, mismatched_examples(plan, spec.data_kind),
                                       batch_size=64, mixed_precision=precision)
                        if spec.needs_mismatched else None)
    prior_s = time.perf_counter() - t0
    policy = PolicyWithValueHead(copy.deepcopy(base).train(), None)
    step_fn = alignment_step(spec, policy, iter(plan), prior, tok.pad_token_id, hparams,
                             mismatched_prior=mismatched_prior)
    trainable = [p for p in policy.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-6, betas=(0.9, 0.95))
    tokens: list[int] = []

    def counted(step):
        out = step_fn(step)
        tokens.append(out[3])
        return out

    times = []
    for step in range(n_steps):
        t = time.perf_counter()
        train_step(lambda _s, step=step: counted(step), trainable, opt, precision)
        times.append(time.perf_counter() - t)
    return times, tokens, prior_s


def trl_run(kind: str, base, tok, rows: list[dict], bsz: int, n_steps: int,
            matched: bool) -> list[float]:
    """Step times of TRL's trainer (``kind`` dpo|kto) over ``n_steps`` steps."""
    from datasets import Dataset
    from transformers import TrainerCallback
    from transformers.trainer_callback import PrinterCallback
    from trl import DPOConfig, DPOTrainer, KTOConfig, KTOTrainer

    times: list[float] = []

    class Timer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            self.t = time.perf_counter()

        def on_step_end(self, args, state, control, **kw):
            times.append(time.perf_counter() - self.t)

    extra = {"bf16": False, "gradient_checkpointing": False} if matched else {}
    cfg_cls, trainer_cls = (DPOConfig, DPOTrainer) if kind == "dpo" else (KTOConfig, KTOTrainer)
    with tempfile.TemporaryDirectory() as out:
        args = cfg_cls(output_dir=out, use_cpu=True, report_to="none", save_strategy="no",
                       per_device_train_batch_size=bsz, max_steps=n_steps,
                       logging_steps=10_000, disable_tqdm=True, **extra)
        model = copy.deepcopy(base).train()
        ref = copy.deepcopy(base).eval()
        trainer = trainer_cls(model=model, ref_model=ref, args=args,
                              train_dataset=Dataset.from_list(rows), processing_class=tok,
                              callbacks=[Timer()])
        trainer.remove_callback(PrinterCallback)  # its per-run log dict would end the output
        trainer.train()
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", default=str(ROOT / "params.yaml"))
    parser.add_argument("--model-dir", default=str(ROOT / "models" / "sft" / "ds"))
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    logging.getLogger("transformers").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    cfg = C.load(args.params)
    bsz = int(cfg.align.batch_size)
    n_pairs = bsz // 2 * args.steps  # DPO: bsz/2 pairs per step; KTO: bsz completions per step
    records = world_records(n_pairs)
    tok, base, how = load_or_build(cfg, Path(args.model_dir), records)
    examples, _ = build_examples(records, tok, format_prompt, 10_000)
    a = cfg.align
    hparams = loss_params(a)
    total_tokens = int(collate(examples, tok.pad_token_id)["attention_mask"].sum())
    per_step = total_tokens / args.steps

    def text(r):
        return format_prompt(r["question"]), "".join(r["steps"])

    dpo_rows = []
    for i in range(0, len(records), 2):
        prompt, chosen = text(records[i])
        dpo_rows.append({"prompt": prompt, "chosen": chosen, "rejected": text(records[i + 1])[1]})
    kto_rows = [{"prompt": text(r)[0], "completion": text(r)[1], "label": bool(r["correct"])}
                for r in records]

    def tps(times):
        return per_step / statistics.median(times[args.warmup:])

    results = {}
    started = time.perf_counter()
    default_precision = cfg.runtime.mixed_precision
    for kind, rows, kbsz in (("dpo", dpo_rows, bsz // 2), ("kto", kto_rows, bsz)):
        measured = {}
        for precision in dict.fromkeys((default_precision, "no")):
            times, tokens, prior_s = ours(ALGORITHMS[kind], base, tok, examples, hparams, bsz,
                                          args.steps, precision)
            assert abs(sum(tokens) - total_tokens) <= 0.01 * total_tokens, "one epoch expected"
            epoch_s = statistics.median(times[args.warmup:]) * args.steps
            measured[precision] = (tps(times), total_tokens / (epoch_s + prior_s), prior_s)
        ours_default = measured[default_precision][0]
        ours_fp32, ours_amortised, prior_s = measured["no"]
        trl_default = tps(trl_run(kind, base, tok, rows, kbsz, args.steps, matched=False))
        trl_matched = tps(trl_run(kind, base, tok, rows, kbsz, args.steps, matched=True))
        results[kind] = (ours_default, ours_fp32, ours_amortised, prior_s, trl_default,
                         trl_matched)
    wall = time.perf_counter() - started

    n_params = sum(p.numel() for p in base.parameters())
    print(f"model: {how}, {n_params:,} parameters; {args.steps} steps of {bsz} sequences "
          f"({per_step:.0f} tokens/step); threads {args.threads}; median after "
          f"{args.warmup} warm-up steps; {wall:.0f} s\n")
    print(f"| algorithm | ours, params' default ({default_precision}) tok/s | TRL defaults "
          "(bf16 autocast, grad ckpt) tok/s | speedup vs defaults | ours fp32 tok/s | "
          "TRL matched (fp32, no ckpt) tok/s | vs matched | vs matched, prior charged |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, (od, of, oa, prior_s, td, tm) in results.items():
        print(f"| {kind} | {od:.0f} | {td:.0f} | {od / td:.2f} | {of:.0f} | {tm:.0f} | "
              f"{of / tm:.2f} | {oa / tm:.2f} (prior {prior_s:.2f} s) |")
    m = {k: v[1] / v[5] for k, v in results.items()}
    print(f"\nmatched precision (fp32, no checkpointing): dpo={m['dpo']:.2f} kto={m['kto']:.2f}")
    s = {k: v[0] / v[4] for k, v in results.items()}
    print(f"trl_speedup dpo={s['dpo']:.2f} kto={s['kto']:.2f}")


if __name__ == "__main__":
    main()
