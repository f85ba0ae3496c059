"""Pretraining throughput: both base models one after the other with two threads each (the
old per-model stages) against side by side in two single-thread processes (the `base` stage).

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_pretrain_workers.py

Same step as `pipa.pretrain` at the default's size (width 128, 4 layers, batch 32 x 128
tokens, bf16 autocast, AdamW). Last line: the throughput ratio (side by side / sequential).
"""

from __future__ import annotations

import multiprocessing
import time

import torch
from transformers import LlamaConfig, LlamaForCausalLM

STEPS, WARMUP = 40, 5


def ms_per_step(threads: int) -> float:
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=512, hidden_size=128, intermediate_size=384,
                         num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=4,
                         max_position_embeddings=160)
    model = LlamaForCausalLM(config)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    batch = torch.randint(0, 512, (32, 128))

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        opt.step()
        opt.zero_grad()

    for _ in range(WARMUP):
        step()
    started = time.perf_counter()
    for _ in range(STEPS):
        step()
    return (time.perf_counter() - started) / STEPS * 1000


def main() -> None:
    two_threads = ms_per_step(2)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        side_by_side = pool.map(ms_per_step, [1, 1])
    sequential = 2 * two_threads  # one step of each model, one after the other
    parallel = max(side_by_side)  # one step of each model, at once
    print(f"2 threads, one model at a time: {two_threads:.1f} ms/step")
    print(f"1 thread each, two models at once: {side_by_side[0]:.1f} / {side_by_side[1]:.1f} "
          "ms/step")
    print(f"pretrain_workers_speedup={sequential / parallel:.2f}")


if __name__ == "__main__":
    main()
