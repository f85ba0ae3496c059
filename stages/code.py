"""Stage code: one manifest per stage script (its import closure, hashed), so every stage
depends on exactly the code it runs (pipa/code_manifest.py says why and how)."""

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from pipa.code_manifest import write_manifests

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--stages", default="stages", help="folder of the stage scripts")
parser.add_argument("--out", default="data/code", help="folder of the manifests (whole)")
args = parser.parse_args()
counts = write_manifests(Path(args.stages), ROOT, Path(args.out))
print(f"code: {len(counts)} manifests in {args.out} "
      + ", ".join(f"{stem} {n}" for stem, n in counts.items()))
