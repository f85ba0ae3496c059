"""Grid cells one at a time (what plain `dvc repro` does: each cell's lr candidates and test
shards in forked workers) against two at a time with each cell's jobs inline
(what scripts/parallel_repro.py does: ``PIPA_MAX_WORKERS=1``), measured in the same run.

    python benchmarks/bench_parallel_cells.py [--cells 4] [--jobs 2]

Runs the cells' own stage commands (resolved from dvc.yaml by scripts/stage_commands.py,
the first ``--cells`` of `align_paired_answer`), each a whole process as under DVC, with
their outputs redirected to temporary folders; DVC's bookkeeping between stages is not
included (the pipeline's timing is in runs/timing.json). Needs the default pipeline's
inputs (a full repro). Both ways must write identical predictions and metrics (checked).
The last line is ``parallel_cells_speedup=X.XX`` (serial time / side-by-side time).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from stage_commands import ordered_stages, plan_rows


def cell_commands(n: int) -> list[tuple[str, str]]:
    """``(stage, command)`` of the first ``n`` paired-answer cells."""
    rows = plan_rows(ordered_stages([]))
    cells = [(name, cmd) for _, name, cmd in rows if name.startswith("align_paired_answer@")]
    if len(cells) < n:
        sys.exit(f"only {len(cells)} align_paired_answer cells in dvc.yaml, asked for {n}")
    return cells[:n]


def redirect(cmd: str, out: Path) -> str:
    """The command with ``--out``/``--eval-out`` moved under ``out``."""
    cmd = re.sub(r"--out \S+", f"--out {out}/align", cmd)
    return re.sub(r"--eval-out \S+", f"--eval-out {out}/eval", cmd)


def run_streams(cells: list[tuple[str, str]], jobs: int, root: Path, env: dict) -> float:
    """Run the cells in ``jobs`` streams (cell k in stream k % jobs); return the wall time."""
    failures: list[str] = []

    def stream(k: int) -> None:
        for i, (name, cmd) in enumerate(cells):
            if i % jobs != k:
                continue
            proc = subprocess.run(redirect(cmd, root / name), shell=True, cwd=ROOT, env=env,
                                  capture_output=True, text=True, check=False)
            if proc.returncode:
                failures.append(f"{name}: exit {proc.returncode}\n{proc.stderr[-2000:]}")

    started = time.perf_counter()
    threads = [threading.Thread(target=stream, args=(k,)) for k in range(jobs)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if failures:
        sys.exit("\n".join(failures))
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=2)
    args = parser.parse_args()
    cells = cell_commands(args.cells)
    env = {k: v for k, v in os.environ.items() if k != "PIPA_MAX_WORKERS"}
    with tempfile.TemporaryDirectory() as tmp:
        serial_dir, side_dir = Path(tmp) / "serial", Path(tmp) / "side"
        serial = run_streams(cells, 1, serial_dir, env)
        print(f"{len(cells)} cells one at a time (forked workers): {serial:.1f} s", flush=True)
        side = run_streams(cells, args.jobs, side_dir, {**env, "PIPA_MAX_WORKERS": "1"})
        print(f"{len(cells)} cells {args.jobs} at a time (jobs inline): {side:.1f} s",
              flush=True)
        for name, _ in cells:
            for rel in ("eval/predictions.jsonl", "eval/metrics.json"):
                a, b = serial_dir / name / rel, side_dir / name / rel
                if a.read_bytes() != b.read_bytes():
                    sys.exit(f"{name}: {rel} differs between the two schedules")
    print("predictions and metrics identical under both schedules")
    print(f"parallel_cells_speedup={serial / side:.2f}")


if __name__ == "__main__":
    main()
