"""Table 5 (issue #20) on a finished run of the study, outside DVC: search every step-level
PIPA cell with its value head, then write the table.

    python scripts/table5.py                      # this checkout's run (runs/main)
    python scripts/table5.py --run-dir /tmp/seed1 # another clone's run (its params.yaml)

For each cell SETTING/ALGORITHM/MODEL/seedS (``--settings`` x ``--algorithms`` x the run's
params ``models`` x ``seeds``) it runs ``pipa.search_eval.search_cell`` on the cell's
``runs/main/.../align`` and keeps the record in ``<run-dir>/runs/search/<cell>/search.json``
(a record already there with the same spec is reused), the cells in ``runtime.workers``
forked single-thread processes. Then ``pipa.reports.search_table.build`` writes
``table5.{md,tex,csv}``, ``verifier.csv`` and ``reliability.{csv,png}`` under ``--out``
(default ``<run-dir>/reports/search``). The reference scorers (chance, the world's oracle)
run on the cells of the ``--references`` seeds only: they check the search, not the cell.
Stage wiring (params ``search``, dvc.yaml) waits for the main job's time budget (README).
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

from pipa import config as C
from pipa.io import atomic_path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--run-dir", type=Path, default=ROOT)
    ap.add_argument("--settings", nargs="+", default=["unpaired_step"])
    ap.add_argument("--algorithms", nargs="+", default=["pipa_m", "pipa_n"])
    ap.add_argument("--problems", type=int, default=100, help="test problems per benchmark")
    ap.add_argument("--budgets", type=int, nargs="+", default=[4, 8])
    ap.add_argument("--beam-width", type=int, default=2)
    ap.add_argument("--temperature", type=float, default=0.8)
    ap.add_argument("--max-step-tokens", type=int, default=48)
    ap.add_argument("--references", type=int, nargs="*", default=[0],
                    help="seeds whose cells also run the oracle and random scorers")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from pipa.hardware import setup_runtime
    from pipa.parallel import fork_map
    from pipa.reports.search_table import build, read_records
    from pipa.search_eval import SearchSpec, cell_fingerprint, record_is_fresh, search_cell

    run = args.run_dir.resolve()
    cfg = C.load(run / "params.yaml")
    cells = [(s, a, m, seed) for s in args.settings for a in args.algorithms
             for m in cfg.models for seed in cfg.seeds]

    def spec_of(seed: int) -> SearchSpec:
        return SearchSpec(problems=args.problems, budgets=tuple(args.budgets),
                          beam_width=args.beam_width, temperature=args.temperature,
                          max_step_tokens=args.max_step_tokens,
                          references=seed in args.references)

    def record_path(cell) -> Path:
        s, a, m, seed = cell
        return run / "runs/search" / s / a / m / f"seed{seed}" / "search.json"

    def align_dir(cell) -> Path:
        s, a, m, seed = cell
        return run / "runs/main" / s / a / m / f"seed{seed}" / "align"

    # each cell's model hashed once: to judge its cached record, then kept in the new one
    fingerprints = {cell: cell_fingerprint(cfg, align_dir(cell)) for cell in cells}

    def fresh(cell) -> bool:
        return record_is_fresh(record_path(cell), spec_of(cell[3]), fingerprints[cell])

    def one(cell) -> str:
        _, _, m, seed = cell
        started = time.perf_counter()
        found = search_cell(cfg, spec_of(seed), model_name=m, seed=seed,
                            align_dir=align_dir(cell), world_dir=run / "data/world",
                            fingerprint=fingerprints[cell])
        path = record_path(cell)
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            tmp.write_text(json.dumps(found, sort_keys=True) + "\n")
        return f"{'/'.join(map(str, cell))}: {time.perf_counter() - started:.0f} s"

    todo = [c for c in cells if not fresh(c)]
    setup_runtime(cfg.runtime.threads, cfg.seed)
    started = time.perf_counter()
    for line in fork_map(one, todo, threads=cfg.runtime.threads, workers=cfg.runtime.workers):
        print(line, flush=True)
    print(f"searched {len(todo)} of {len(cells)} cells in {time.perf_counter() - started:.0f} s "
          f"({len(cells) - len(todo)} reused)", flush=True)
    records = read_records([({"setting": s, "algorithm": a, "model": m, "seed": seed},
                             record_path((s, a, m, seed))) for s, a, m, seed in cells])
    out = args.out or run / "reports/search"
    written = build(records, out, cfg.report.model_labels, cfg.report.benchmark_labels)
    print(f"wrote {out}: Table 5 over {len(written['cells'])} cells")
    print((out / "table5.md").read_text())


if __name__ == "__main__":
    main()
