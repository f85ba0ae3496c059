"""Stage search: one Table 5 cell (issue #20), a trained step-level PIPA cell searched with
its value head: greedy, majority@1..max(N), best-of-N by g and the step beams (scored by g,
by the policy's log-probability and, on params' ``search.reference_seeds``, by chance and
by the world's oracle), every mode's tokens counted (``pipa.search_eval.search_cell``)."""

import argparse

import _boot

from pipa.hardware import setup_runtime
from pipa.parallel import worker_plan
from pipa.search_eval import SearchSpec, search_cell, write_search

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--setting", required=True)
parser.add_argument("--algorithm", required=True)
parser.add_argument("--model", required=True)
parser.add_argument("--seed", type=int, required=True)
parser.add_argument("--align", required=True, help="the trained cell's align folder")
parser.add_argument("--out", required=True, help="folder of the cell's search.json")
parser.add_argument("--world", default="data/world")
args = parser.parse_args()
cell = (args.setting, args.algorithm, args.model, args.seed)
_boot.outputs(f"{args.out}/search.json")
cfg = _boot.config()
# one job, with the threads every job of a stage gets (pipa.parallel): the same bytes
# whether the cell runs alone (plain `dvc repro`) or beside another (scripts/repro.sh)
setup_runtime(worker_plan(cfg.runtime.threads, cfg.runtime.workers, 1)[1], cfg.seed)
record = search_cell(cfg, SearchSpec.of_cell(cfg.search, args.seed), model_name=args.model,
                     seed=args.seed, align_dir=args.align, world_dir=args.world)
write_search(record, args.out)
timing = record["timing"]
print(f"search {'/'.join(map(str, cell))}: {timing['seconds']} s (sampling and scoring the "
      f"N samples {timing['sampling_seconds']} s; "
      + ", ".join(f"{mode} {s} s" for mode, s in timing["modes"].items())
      + f"); g's AUC at every step end {record['verifier']['auc_step']:.3f}")
