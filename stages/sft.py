"""Stage sft@MODEL: fine-tune the base model on the correct solutions (the paper: 3 epochs).

With --prior all|incorrect it trains the Table 3 priors instead: the base model fine-tuned
on all samples (PIPA-M's p(y|x)) or on the incorrect ones only (PIPA-N's p(y|x, c=0)).
"""

import argparse

import _boot

from pipa import alphamath
from pipa.finetune import finetune
from pipa.labels import solutions_records
from pipa.training import end_distributed, is_main_process

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--model", required=True)
parser.add_argument("--base", required=True,
                    help="folder of the model to start from (params paths.base_models/MODEL)")
parser.add_argument("--data", default="data/alphamath/train.json",
                    help="AlphaMath-format training file (params paths.train_data)")
parser.add_argument("--prior", choices=["sft", "all", "incorrect"], default="sft")
parser.add_argument("--out", required=True)
parser.add_argument("--live", default=None)
args = parser.parse_args()
_boot.outputs(args.out, args.live)
cfg = _boot.config()
solutions = alphamath.read(args.data)
keep = {"sft": lambda s: s.correct, "all": lambda s: True, "incorrect": lambda s: not s.correct}
records = solutions_records([s for s in solutions if keep[args.prior](s)])
section = "sft" if args.prior == "sft" else "prior_ft"
summary = finetune(cfg, args.model, args.base, records, section, args.out, args.live)
end_distributed()
if is_main_process():
    print(f"{section} {args.model} ({args.prior}): {summary['examples']} examples, "
          f"{summary['steps']} steps, final loss {summary['final_loss']:.4f}, "
          f"{summary['seconds']} s")
