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

``--all-tokens`` measures Figure 3's quantity instead: the geometric mean over every
response token of p(c_t | x, y<t) (token labels as the alignment loss reads them), for a
head fitted on the hidden states that predict each token (as ``PolicyWithValueHead``
aligns them) of the problems outside a held-out share (``--holdout``, split by question),
scored on both: the fitted problems (what the training curve of Figure 3 sees) and problems
the head never saw (what it knows). Each is printed beside the best constant g of its own
labels, the floor a head that learned only the base rate reaches.

``--oracle-bound`` prints that measure for a g that knows exactly whether an earlier step
of the solution is wrong (the world's exact checker, ``pipa.search.world_oracle``), alone
and with the step's position (the label rate of its case): what perfect detection of
written errors is worth. A head could add other foresight (which steps are hard), so
neither is a strict ceiling.
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


def _append(record: dict) -> None:
    """One JSON line to ``runs/levers/probe.jsonl``, and the record printed."""
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    with open(RESULTS, "a") as fh:
        fh.write(json.dumps(record, sort_keys=True) + "\n")
    print(json.dumps(record, indent=1, sort_keys=True))


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


@torch.no_grad()
def token_features(model, examples, pad_id: int, batch_size: int):
    """(hidden state that predicts each response token, its label c_t, example index), in
    example then token order. ``pipa.batching.collate`` marks token t's position; the state
    at t - 1 predicts it, as ``PolicyWithValueHead`` gives it to the head."""
    from pipa.batching import collate

    feats, labels = [], []
    for start in range(0, len(examples), batch_size):
        batch = collate(examples[start:start + batch_size], pad_id)
        hidden = model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
                       output_hidden_states=True).hidden_states[-1].float()
        response = batch["response_mask"]
        feats.append(hidden[:, :-1][response[:, 1:]])
        labels.append(batch["token_labels"][response])
    owner = [i for i, e in enumerate(examples) for _ in e.response_ids]
    return torch.cat(feats), torch.cat(labels), torch.tensor(owner)


def label_likelihood(g: torch.Tensor, y: torch.Tensor) -> float:
    """Figure 3's measure: exp(mean log p(c_t)), p(c_t = 1) = g."""
    return float(torch.exp(-torch.nn.functional.binary_cross_entropy(g, y)))


def fit_head_on_features(head, x, y, fit, args) -> torch.Tensor:
    """The head alone on the frozen trunk's cached states: g on every token."""
    opt = torch.optim.Adam(head.parameters(), lr=args.lr)
    xf, yf = x[fit], y[fit]
    gen = torch.Generator().manual_seed(0)
    for _ in range(args.epochs):  # minibatches of 4,096 tokens
        order = torch.randperm(len(yf), generator=gen)
        for start in range(0, len(yf), 4096):
            idx = order[start:start + 4096]
            opt.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(head(xf[idx]), yf[idx]) \
                .backward()
            opt.step()
    with torch.no_grad():
        return torch.sigmoid(head(x))


def fit_head_and_trunk(head, model, examples, fitted, pad_id, args) -> torch.Tensor:
    """A process reward model's training: the head and the whole trunk (at ``--trunk-lr``)
    by cross-entropy on the token labels of the ``fitted`` examples, batches of 32
    solutions; then g on every token of ``examples`` (hidden states of the trained trunk),
    in ``token_features``' order."""
    from pipa.batching import collate
    from pipa.value_head import PolicyWithValueHead

    policy = PolicyWithValueHead(model, head)
    policy.train()
    opt = torch.optim.AdamW([{"params": list(model.parameters()), "lr": args.trunk_lr},
                             {"params": list(head.parameters()), "lr": args.lr}],
                            weight_decay=0.0)
    gen = torch.Generator().manual_seed(0)
    for _ in range(args.epochs):
        order = torch.randperm(len(fitted), generator=gen).tolist()
        for start in range(0, len(order), 32):
            batch = collate([fitted[i] for i in order[start:start + 32]], pad_id)
            _, v = policy(batch["input_ids"], batch["attention_mask"])
            response = batch["response_mask"]
            opt.zero_grad()
            torch.nn.functional.binary_cross_entropy_with_logits(
                v[response], batch["token_labels"][response]).backward()
            opt.step()
    policy.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(examples), 128):
            batch = collate(examples[start:start + 128], pad_id)
            _, v = policy(batch["input_ids"], batch["attention_mask"])
            out.append(torch.sigmoid(v[batch["response_mask"]]))
    return torch.cat(out)


def oracle_bound(records: list[dict], examples) -> dict:
    """Figure 3's measure for g = the label rate of the token's case, for two cases: whether
    a step before the token's step is wrong (exact checker), ``detector``; and that with the
    step's index and the solution's number of steps, ``detector_and_position`` (a perfect
    checker that knows where it is: past the last operation without an error, the answer
    is right). Neither sees the token's own step or any later one."""
    from pipa.search import world_oracle

    record_of = {r["rid"]: r for r in records}
    chosen = [record_of[e.rid] for e in examples]
    verdicts = world_oracle([r["question"] for r in chosen])(
        list(range(len(chosen))), [r["steps"] for r in chosen])
    placed, labels = [], []  # (an earlier step is wrong, step index, number of steps)
    for e, right, record in zip(examples, verdicts, chosen):
        first_wrong = next((k for k, ok in enumerate(right) if ok < 0.5), len(right))
        placed += [(k > first_wrong, k, len(record["steps"])) for k in e.step_ids]
        labels += [float(c) for c in e.token_labels]
    seen = [case[0] for case in placed]
    y = torch.tensor(labels)

    def case_rate_likelihood(cases: list) -> float:
        g = torch.empty_like(y)
        for case in set(cases):
            where = torch.tensor([c == case for c in cases])
            g[where] = y[where].mean()
        return round(label_likelihood(g.clamp(1e-6, 1 - 1e-6), y), 4)

    return {"tokens": len(y), "after_an_error_share": round(sum(seen) / len(seen), 4),
            "detector": case_rate_likelihood(seen),
            "detector_and_position": case_rate_likelihood(placed),
            "constant_floor": round(label_likelihood(torch.full_like(y, float(y.mean())),
                                                     y), 4)}


def labelled_examples(args, cfg, tok, fmt):
    """The labelled records of ``--labels`` and their tokenized examples (as alignment
    builds them)."""
    from pipa.examples import build_examples
    from pipa.io import read_jsonl

    records = read_jsonl(ROOT / f"data/labels/{args.labels}.jsonl")
    examples, _ = build_examples(records, tok, fmt, cfg.family(args.model).arch.max_len)
    return records, examples


def all_tokens_probe(args, cfg, tok, model, fmt) -> dict:
    """Fit the head on every token of the problems outside the held-out share; score the
    label likelihood on fitted and held-out problems (see the module docstring)."""
    import random

    from pipa.value_head import ValueHead

    records, examples = labelled_examples(args, cfg, tok, fmt)
    questions = sorted({r["question"] for r in records})
    random.Random(cfg.seed).shuffle(questions)
    held = set(questions[:round(args.holdout * len(questions))])
    question_of = {r["rid"]: r["question"] for r in records}
    held_example = torch.tensor([question_of[e.rid] in held for e in examples])
    x, y, owner = token_features(model, examples, tok.pad_token_id, cfg.eval.batch_size)
    is_held = held_example[owner]
    fit, out = ~is_held, is_held

    torch.manual_seed(0)
    head = ValueHead(x.shape[1])
    if args.trunk_lr is None:
        g = fit_head_on_features(head, x, y, fit, args)
    else:
        fitted = [e for e, h in zip(examples, held_example.tolist()) if not h]
        g = fit_head_and_trunk(head, model, examples, fitted, tok.pad_token_id, args)

    def scored(part):
        rate = float(y[part].mean())
        return {"tokens": int(part.sum()), "label_likelihood": round(label_likelihood(
                    g[part], y[part]), 4),
                "constant_floor": round(label_likelihood(torch.full_like(y[part], rate),
                                                         y[part]), 4)}

    return {"fitted": scored(fit), "held_out": scored(out), "holdout": args.holdout,
            "held_out_questions": len(held), "questions": len(questions)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="ds")
    ap.add_argument("--labels", default="unpaired_step", help="a labelled setting's file")
    ap.add_argument("--target", choices=["step", "final"], default="step")
    ap.add_argument("--prompt-only", action="store_true")
    ap.add_argument("--epochs", type=int, default=300)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--all-tokens", action="store_true",
                    help="Figure 3's measure on every token, fitted vs held-out problems")
    ap.add_argument("--holdout", type=float, default=0.2,
                    help="share of questions held out (--all-tokens)")
    ap.add_argument("--oracle-bound", action="store_true",
                    help="--all-tokens' ceiling for a perfect detector of earlier errors")
    ap.add_argument("--trunk-lr", type=float, default=None,
                    help="--all-tokens: train the trunk too at this lr (a process reward "
                         "model's training); default: the frozen SFT trunk")
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
    if args.oracle_bound:
        _append({"model": args.model, "labels": args.labels, "oracle_bound": True,
                 **oracle_bound(*labelled_examples(args, cfg, tok, fmt)),
                 "machine": machine()})
        return
    if args.all_tokens:
        _append({"model": args.model, "labels": args.labels, "all_tokens": True,
                 "epochs": args.epochs, "lr": args.lr, "trunk_lr": args.trunk_lr,
                 **all_tokens_probe(args, cfg, tok, model, fmt),
                 "machine": machine(), "seconds": round(time.perf_counter() - started, 1)})
        return
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
    _append(record)


if __name__ == "__main__":
    main()
