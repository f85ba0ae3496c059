"""Stage sample: AlphaMath-format alignment data sampled from the DS-family base model."""

import argparse
import json

import _boot

from pipa import alphamath, world
from pipa.config import get
from pipa.io import write_json
from pipa.sampling import sample_solutions
from pipa.training import setup_runtime
from pipa.workflow import load_policy_model, load_split, prompt_formatter, subsample

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--base", required=True,
                    help="folder of the model that samples (params paths.base_models/sampling.model)")
parser.add_argument("--world", default="data/world")
parser.add_argument("--out", default="data/alphamath/train.json")
parser.add_argument("--stats", default="data/alphamath/stats.json")
args = parser.parse_args()
_boot.outputs(args.out, args.stats)
params = _boot.params()
cfg = get(params, "sampling")
setup_runtime(int(get(params, "runtime.threads")), int(get(params, "seed")))
tok, model = load_policy_model(params, cfg["model"], args.base, on_device=True)
problems = subsample(load_split(args.world, "train"), cfg.get("n_problems"),
                     int(get(params, "seed")))
rows, stats = sample_solutions(
    model, tok, problems, format_prompt=prompt_formatter(params, cfg["model"], tok),
    n_samples=int(cfg["samples_per_problem"]), n_rollouts=int(cfg["rollouts"]),
    temperature=float(cfg["temperature"]), max_new_tokens=int(cfg["max_new_tokens"]),
    batch_size=int(cfg["batch_size"]), seed=int(get(params, "seed")), check=world.check,
    include_gold=bool(cfg.get("include_gold", False)))
alphamath.write(args.out, rows)
write_json(args.stats, stats)
print("sample: " + json.dumps(stats))
