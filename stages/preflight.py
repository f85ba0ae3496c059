"""Stage preflight, the first of the pipeline: check params.yaml whole, algorithm names
included, then write each stage script's code manifest (its import closure, hashed:
pipa/code_manifest.py), which every other stage depends on."""

import argparse
import sys
from pathlib import Path

import _boot

from pipa.code_manifest import write_manifests

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--stages", default="stages", help="folder of the stage scripts")
parser.add_argument("--out", default="data/code", help="folder of the manifests (whole)")
args = parser.parse_args()
_boot.outputs(args.out)
cfg = _boot.config()  # a bad name stops the run here, before any work
problem = _boot.launcher_problem(cfg.runtime.launcher)
if problem:
    sys.exit(f"error: params.yaml: {problem}")
counts = write_manifests(Path(args.stages), _boot.ROOT, Path(args.out))
print(f"preflight: params.yaml valid; {len(counts)} code manifests in {args.out}: "
      + ", ".join(f"{stem} {n}" for stem, n in counts.items()))
