"""Tokens/s of batched KV-cache generation vs a one-prompt-at-a-time loop.

    OMP_NUM_THREADS=1 python benchmarks/bench_generation.py [--model-dir DIR]

Builds (or loads from ``--model-dir``: a ``save_pretrained`` folder holding the model and its
tokenizer) a small Llama of about 1M parameters (hidden 128, 4 layers) with a character
tokenizer, then generates ``--n-prompts`` x ``--new-tokens`` greedily with ``pipa.generation``
at ``--batch-size`` and one prompt at a time (on the first ``--single-subset`` prompts),
normalised to generated tokens per second. HF ``model.generate`` (batched, left padded) is
timed too, for reference. The last line printed is ``speedup_batched_vs_single=X.XX``.
"""

from __future__ import annotations

import argparse
import random
import string
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipa.generation import generate

CHARS = string.ascii_letters + string.digits + " \n.:+-*/=?"


def char_tokenizer():
    from tokenizers import Tokenizer, decoders
    from tokenizers.models import BPE
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1}
    for ch in CHARS:
        vocab[ch] = len(vocab)
    tok = Tokenizer(BPE(vocab=vocab, merges=[], unk_token=None))
    tok.decoder = decoders.Fuse()
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>")


def build_model(vocab_size: int, seed: int = 0):
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(seed)
    cfg = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=128,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=4,
        intermediate_size=512,
        max_position_embeddings=512,
        pad_token_id=0,
        eos_token_id=1,
        bos_token_id=None,
        tie_word_embeddings=True,
    )
    return LlamaForCausalLM(cfg).eval()


def make_prompts(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    names = ["Max", "Ann", "Bo", "Cy", "Dee"]
    things = ["toys", "apples", "cars", "pens"]
    out = []
    for _ in range(n):
        ops = " ".join(f"{rng.choice('*+-')}{rng.randint(1, 99)}" for _ in range(rng.randint(1, 8)))
        out.append(f"{rng.choice(names)} {rng.randint(2, 99)} {rng.choice(things)} {ops} ?\n")
    return out


def count_tokens(tok, texts: list[str]) -> int:
    return sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def hf_generate(model, tok, prompts, new_tokens, batch_size) -> list[str]:
    old = tok.padding_side
    tok.padding_side = "left"
    try:
        outs = []
        for i in range(0, len(prompts), batch_size):
            enc = tok(prompts[i : i + batch_size], return_tensors="pt", padding=True)
            with torch.inference_mode():
                ids = model.generate(
                    **enc, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tok.pad_token_id
                )
            outs += tok.batch_decode(ids[:, enc["input_ids"].shape[1] :], skip_special_tokens=True)
        return outs
    finally:
        tok.padding_side = old


def main(argv: list[str] | None = None) -> float:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", type=Path, default=None)
    ap.add_argument("--n-prompts", type=int, default=128)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--single-subset", type=int, default=32)
    ap.add_argument("--skip-hf", action="store_true")
    args = ap.parse_args(argv)

    if args.model_dir is not None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        tok = AutoTokenizer.from_pretrained(args.model_dir)
        model = AutoModelForCausalLM.from_pretrained(args.model_dir).eval()
    else:
        tok = char_tokenizer()
        model = build_model(len(tok))
    n_params = sum(p.numel() for p in model.parameters())
    prompts = make_prompts(args.n_prompts)
    kw = {"max_new_tokens": args.new_tokens}

    generate(model, tok, prompts[:4], batch_size=4, **kw)  # warm-up
    batched, t_b = timed(lambda: generate(model, tok, prompts, batch_size=args.batch_size, **kw))
    sub = prompts[: args.single_subset]
    single, t_s = timed(lambda: [generate(model, tok, [p], batch_size=1, **kw)[0] for p in sub])
    if batched[: len(sub)] != single:
        print("WARNING: batched and single greedy outputs differ", file=sys.stderr)
    rows = [
        ("pipa batched", len(prompts), args.batch_size, count_tokens(tok, batched), t_b),
        ("pipa one-at-a-time", len(sub), 1, count_tokens(tok, single), t_s),
    ]
    if not args.skip_hf:
        hf, t_h = timed(lambda: hf_generate(model, tok, prompts, args.new_tokens, args.batch_size))
        rows.append(
            ("HF generate batched", len(prompts), args.batch_size, count_tokens(tok, hf), t_h)
        )

    print(f"model: {n_params / 1e6:.2f}M params, torch threads {torch.get_num_threads()}")
    print(f"{'method':<22}{'prompts':>8}{'batch':>7}{'tokens':>8}{'seconds':>9}{'tok/s':>10}")
    for name, n, b, toks, secs in rows:
        print(f"{name:<22}{n:>8}{b:>7}{toks:>8}{secs:>9.2f}{toks / secs:>10.1f}")
    speedup = (rows[0][3] / rows[0][4]) / (rows[1][3] / rows[1][4])
    print(f"speedup_batched_vs_single={speedup:.2f}")
    return speedup


if __name__ == "__main__":
    main()
