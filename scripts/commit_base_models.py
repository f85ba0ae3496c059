"""Put the base models into git, only as the committed study made them.

    python scripts/commit_base_models.py     # then: git commit -m "..." models/base

Why: CI (`.ci/run`) reproduces the study with `scripts/repro.sh --force --keep base`:
every stage again but pretraining, which DVC runs only when the base stage changed (its
code, params or corpus) or when ``models/base`` is missing. With the base models in git
(``cache: false`` in dvc.yaml) a fresh clone has them, and CI spends its time on what the
study measures: on the slowest 2-core type (a 2.0 GHz Zen 1, AVX2, fp32) pretraining alone
is about 36 of the main job's minutes.

The models must be the ones the committed study was made from, or every table would rest
on other base models than the ones in git. So this script

1. refuses on a machine of another type than the committed study's (``machine()`` and the
   resolved precision against ``reports/provenance.json``: base models differ between CPU
   types, the README's "Reproducing on another machine");
2. runs ``scripts/parallel_repro.py base`` (the world and the base models, as DVC needs);
3. adds ``models/base`` to git only if the base stage's outputs came out as ``dvc.lock``
   records them, byte for byte; otherwise it says so and adds nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def locked_outs(lock_path: Path) -> dict[str, str]:
    """The base stage's outputs in ``dvc.lock``: path -> md5."""
    stage = yaml.safe_load(lock_path.read_text())["stages"].get("base")
    if stage is None:
        sys.exit(f"error: {lock_path} has no `base` stage; run the study once "
                 "(`bash scripts/repro.sh`) before committing its base models")
    return {out["path"]: out["md5"] for out in stage["outs"]}


def machine_types(provenance: Path) -> tuple[tuple | None, tuple | None]:
    """(this machine, the committed study's) as ``pipa.compare`` keys machine types for its
    identity check: this machine described as ``reports/provenance.json`` describes cells."""
    from pipa.compare import _machine_type
    from pipa.config import get, load_params
    from pipa.hardware import machine, resolve_precision

    precision = resolve_precision(get(load_params(ROOT / "params.yaml"),
                                      "runtime.mixed_precision"))
    here = _machine_type({"machines": [machine()], "precision": [precision]})
    return here, _machine_type(json.loads(provenance.read_text()))


def main() -> None:
    provenance = ROOT / "reports" / "provenance.json"
    here, committed = machine_types(provenance)
    if here != committed:
        sys.exit(f"error: this machine is {here}, the committed study was made on "
                 f"{committed} ({provenance}): its base models would differ. Run this on "
                 "the committed study's machine type.")
    before = locked_outs(ROOT / "dvc.lock")
    subprocess.run([sys.executable, str(ROOT / "scripts" / "parallel_repro.py"), "base"],
                   cwd=ROOT, check=True)
    after = locked_outs(ROOT / "dvc.lock")
    if after != before:
        changed = [p for p in before if before[p] != after.get(p)]
        sys.exit(f"error: {', '.join(changed)} came out other than dvc.lock recorded: these "
                 "are not the committed study's base models; nothing added (restore the "
                 "record with `git checkout dvc.lock runs/base`)")
    subprocess.run(["git", "add", "--", "models/base"], cwd=ROOT, check=True)
    listed = subprocess.run(["git", "diff", "--cached", "--stat", "--", "models/base"],
                            cwd=ROOT, capture_output=True, text=True, check=True).stdout
    print(listed or "models/base: already in git, unchanged")
    print(f"models/base as dvc.lock records it ({before['models/base']}); commit it with "
          "`git commit models/base`")


if __name__ == "__main__":
    main()
