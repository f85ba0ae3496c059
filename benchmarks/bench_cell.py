"""Wall time of one grid cell (lr grid + validation + test evaluation) with its independent
jobs in forked single-thread workers (``runtime.workers: 2``) against one process with every
thread (``runtime.workers: 1``), measured in the same run, on this machine's cores.

    python benchmarks/bench_cell.py [--algorithm pipa_m] [--setting unpaired_step] [--reps 2]

Needs the default pipeline's inputs (``dvc repro prior@ds labels_step`` or a full repro):
``models/sft/ds``, ``data/prior/sft/ds.safetensors``, ``data/labels/<setting>.jsonl``,
``data/world``. Both variants run the same code (``align.align_cell`` then
``evaluation.evaluate_folder``) into temporary folders, alternating, and must produce the
same selected lr and the same test accuracies (checked: the split never changes results).
The last line is ``cell_speedup=X.XX`` (median time workers=1 / median time workers=2).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipa import config as C
from pipa.align import align_cell
from pipa.evaluation import evaluate_folder


def run_cell(cfg: C.Config, args, out: Path) -> tuple[float, dict]:
    started = time.perf_counter()
    summary = align_cell(cfg, algorithm=args.algorithm, model_name=args.model, seed=0,
                         labels_path=ROOT / f"data/labels/{args.setting}.jsonl",
                         prior_path=ROOT / f"data/prior/sft/{args.model}.safetensors",
                         sft_dir=ROOT / f"models/sft/{args.model}", world_dir=ROOT / "data/world",
                         out_dir=out / "align")
    result = evaluate_folder(cfg, args.model, out / "align" / "model", ROOT / "data/world",
                             out / "eval")
    seconds = time.perf_counter() - started
    accs = {k: v for k, v in result.items() if k != "seconds"}
    return seconds, {"lr": summary["selected_lr"], "val": summary["val_accuracy"], **accs}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--algorithm", default="pipa_m")
    parser.add_argument("--setting", default="unpaired_step")
    parser.add_argument("--model", default="ds")
    parser.add_argument("--reps", type=int, default=2)
    args = parser.parse_args()
    base = C.load(str(ROOT / "params.yaml"))
    times: dict[int, list[float]] = {1: [], 2: []}
    outcomes: dict[int, dict] = {}
    for rep in range(args.reps):
        for workers in (1, 2) if rep % 2 == 0 else (2, 1):
            cfg = replace(base, runtime=replace(base.runtime, workers=workers))
            with tempfile.TemporaryDirectory() as tmp:
                seconds, outcome = run_cell(cfg, args, Path(tmp))
            times[workers].append(seconds)
            outcomes[workers] = outcome
            print(f"rep {rep} workers={workers}: {seconds:.1f} s {json.dumps(outcome)}",
                  flush=True)
    if outcomes[1] != outcomes[2]:
        sys.exit(f"results differ between workers=1 and workers=2: {outcomes}")
    one, two = statistics.median(times[1]), statistics.median(times[2])
    print(f"{args.setting} {args.algorithm} {args.model}: workers=1 {one:.1f} s, "
          f"workers=2 {two:.1f} s (threads={base['runtime']['threads']})")
    print(f"cell_speedup={one / two:.2f}")


if __name__ == "__main__":
    main()
