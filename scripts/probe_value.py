"""How much does the SFT model's representation know about correctness? The ceiling of
PIPA's value head on a frozen trunk, measured outside DVC from the default run's inputs.

    python scripts/probe_value.py --model ds --labels unpaired_step

PIPA's head g reads the trunk's last hidden state. This script freezes the SFT trunk, reads
its hidden state at the end of every step of the labelled training solutions, and fits the
same head (``pipa.value_head.ValueHead``) to them by plain cross-entropy for many epochs:
the best a head on these features can do, with none of alignment's few steps, small
learning rate or shared trunk in the way. Targets: ``step`` (the step label c_k, what
step-level PIPA trains g on) or ``final`` (the solution's correctness). It is then scored
as ``pipa.verifier`` scores a cell: the AUC of g at the step ends of the SFT model's greedy
decodes of the validation problems against their final correctness. ``--prompt-only``
reads the hidden state where the prompt ends instead, for every step: what the problem
alone says about the chance of solving it. One JSON line per run is appended to
``runs/levers/probe.jsonl``.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "stages"))
import _boot  # noqa: F401  (the repo root on sys.path, the offline guards)
import torch

from pipa import config as C

RESULTS = ROOT / "runs" / "levers" / "probe.jsonl"


@torch.no_grad()
def step_end_features(model, tok, fmt, solutions, prompt_only: bool, batch_size: int):
    """(features per step end, solution index per step end) for ``(question, steps)``."""
    from pipa.models import encode_example
    from pipa.verifier import step_end_tokens

    feats, owner = [], []
    for start in range(0, len(solutions), batch_size):
        chunk = solutions[start:start + batch_size]
        encoded = []
        for question, steps in chunk:
            prompt_ids, response_ids, offsets = encode_example(tok, fmt(question),
                                                               "".join(steps))
            ends = step_end_tokens(offsets, steps)
            where = [len(prompt_ids) - 1] * len(ends) if prompt_only else \
                [len(prompt_ids) + t for t in ends]
            encoded.append((prompt_ids + response_ids, where))
        length = max(len(ids) for ids, _ in encoded)
        ids = torch.full((len(chunk), length), tok.pad_token_id, dtype=torch.long)
        mask = torch.zeros_like(ids)
        for row, (seq, _) in enumerate(encoded):
            ids[row, :len(seq)] = torch.tensor(seq)
            mask[row, :len(seq)] = 1
        hidden = model(input_ids=ids, attention_mask=mask,
                       output_hidden_states=True).hidden_states[-1].float()
        for row, (_, where) in enumerate(encoded):
            feats += [hidden[row, p] for p in where]
            owner += [start + row] * len(where)
    return torch.stack(feats), owner


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ds")
    ap.add_argument("--labels", default="unpaired_step", help="a labelled setting's file")
    ap.add_argument("--target", choices=["step", "final"], default="step")
    ap.add_argument("--prompt-only", action="store_true")
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-3)
    args = ap.parse_args()

    from pipa.evaluation import eval_problems, evaluate_model
    from pipa.hardware import machine, setup_runtime
    from pipa.io import read_jsonl
    from pipa.model_io import load_policy_model, prompt_formatter
    from pipa.sampling import split_steps
    from pipa.value_head import ValueHead
    from pipa.verifier import verifier_metrics
    from pipa.world import subsample

    started = time.perf_counter()
    cfg = C.load(ROOT / "params.yaml")
    setup_runtime(cfg.runtime.threads, 0)
    tok, model = load_policy_model(cfg, args.model, ROOT / f"models/sft/{args.model}")
    model.eval()
    fmt = prompt_formatter(cfg, args.model, tok)
    records = read_jsonl(ROOT / f"data/labels/{args.labels}.jsonl")
    train = [(r["question"], r["steps"]) for r in records]
    x, owner = step_end_features(model, tok, fmt, train, args.prompt_only,
                                 cfg.eval.batch_size)
    if args.target == "step":
        y = torch.tensor([float(lab) for r in records for lab in r["step_labels"]])
    else:
        y = torch.tensor([float(records[i]["correct"]) for i in owner])

    torch.manual_seed(0)
    head = ValueHead(x.shape[1])
    opt = torch.optim.Adam(head.parameters(), lr=args.lr)
    for _ in range(args.epochs):  # full batch: a few thousand step ends
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(head(x), y)
        loss.backward()
        opt.step()
    with torch.no_grad():
        g_train = torch.sigmoid(head(x))
        train_ll = float(torch.exp(-torch.nn.functional.binary_cross_entropy(g_train, y)))

    val = subsample(eval_problems(cfg, ROOT / "data/world", "val"), cfg.align.val_problems,
                    cfg.seed)
    rows = evaluate_model(cfg, args.model, tok, model, val, progress=False)
    question = {p["id"]: p["question"] for p in val}
    decoded = [(question[r["id"]], split_steps(r["output"])) for r in rows]
    kept = [i for i, (_, steps) in enumerate(decoded) if steps]
    xv, owner_v = step_end_features(model, tok, fmt, [decoded[i] for i in kept],
                                    args.prompt_only, cfg.eval.batch_size)
    with torch.no_grad():
        gv = torch.sigmoid(head(xv)).tolist()
    values = [[] for _ in kept]
    for g, i in zip(gv, owner_v):
        values[i].append(g)
    metrics = verifier_metrics(values, [rows[i]["correct"] for i in kept])
    record = {"model": args.model, "labels": args.labels, "target": args.target,
              "prompt_only": args.prompt_only, "epochs": args.epochs, "lr": args.lr,
              "train_step_ends": len(y), "train_base_rate": round(float(y.mean()), 4),
              "train_label_likelihood": round(train_ll, 4),
              "val": {k: (round(v, 4) if isinstance(v, float) else v)
                      for k, v in metrics.items()},
              "machine": machine(), "seconds": round(time.perf_counter() - started, 1)}
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
    print(json.dumps(record, indent=1, sort_keys=True))


if __name__ == "__main__":
    main()
