"""Table 5 (issue #20) on a finished run of the study, outside DVC: what stages search and
table5 do, for another clone's run, with each cell's record cached and its seconds kept.

    python scripts/table5.py                      # this checkout's run
    python scripts/table5.py --run-dir /tmp/seed1 # another clone's run (its params.yaml)

The cells and the spec are the run's params ``search`` section (every setting x algorithm
x model x seed; the reference scorers on ``search.reference_seeds``). Each cell runs
``pipa.search_eval.search_cell`` on ``runs/main/.../align`` and its record goes to
``<run-dir>/runs/search/<cell>/search.json`` (a record already there with the same spec
and model is reused), with its seconds in ``timing.json`` beside it; the cells run in
``runtime.workers`` forked single-thread processes. Then ``table5.{md,tex,csv}``,
``verifier.csv`` and ``reliability.{csv,png}`` go under ``--out`` (default
``<run-dir>/reports/search``).
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
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from pipa.hardware import setup_runtime
    from pipa.parallel import fork_map
    from pipa.reports.search_table import build_from_grid, search_dir
    from pipa.search_eval import (
        SearchSpec,
        align_dir,
        cell_fingerprint,
        record_is_fresh,
        search_cell,
        write_search,
    )

    run = args.run_dir.resolve()
    cfg = C.load(run / "params.yaml")
    cells = cfg.search.cells(cfg.models, cfg.seeds)
    # each cell's model hashed once: to judge its cached record, then kept in the new one
    fingerprints = {cell: cell_fingerprint(cfg, align_dir(run, *cell)) for cell in cells}

    def fresh(cell) -> bool:
        return record_is_fresh(search_dir(run, *cell) / "search.json",
                               SearchSpec.of_cell(cfg.search, cell[3]), fingerprints[cell])

    def one(cell) -> str:
        _, _, m, seed = cell
        found = search_cell(cfg, SearchSpec.of_cell(cfg.search, seed), model_name=m,
                            seed=seed, align_dir=align_dir(run, *cell),
                            world_dir=run / "data/world", fingerprint=fingerprints[cell])
        path = write_search(found, search_dir(run, *cell))
        with atomic_path(path.with_name("timing.json")) as tmp:
            tmp.write_text(json.dumps(found["timing"], sort_keys=True) + "\n")
        return f"{'/'.join(map(str, cell))}: {found['timing']['seconds']:.0f} s"

    todo = [c for c in cells if not fresh(c)]
    setup_runtime(cfg.runtime.threads, cfg.seed)
    started = time.perf_counter()
    for line in fork_map(one, todo, threads=cfg.runtime.threads, workers=cfg.runtime.workers):
        print(line, flush=True)
    print(f"searched {len(todo)} of {len(cells)} cells in {time.perf_counter() - started:.0f} s "
          f"({len(cells) - len(todo)} reused)", flush=True)
    out = args.out or run / "reports/search"
    written = build_from_grid(cfg, run, out)
    print(f"wrote {out}: Table 5 over {len(written['cells'])} cells")
    print((out / "table5.md").read_text())


if __name__ == "__main__":
    main()
