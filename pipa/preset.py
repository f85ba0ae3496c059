"""Write params.yaml from the default plus a preset of overrides.

    python -m pipa.preset micro    # the tiny config the integration tests run
    python -m pipa.preset real     # the paper's setting (7B models, AlphaMath, GSM8K/MATH)

Presets live in ``params/<name>.yaml`` and hold only the keys they change; mappings merge
key by key, lists and scalars replace, and ``null`` removes a key. ``--base`` names the file to start from (default:
``params/default.yaml`` if present, else the current ``params.yaml``).
"""

from __future__ import annotations

import argparse
import copy
from pathlib import Path

import yaml


def merge(base: dict, override: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:  # `key: null` in a preset removes the key
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def apply_preset(base_path: str | Path, preset_path: str | Path) -> dict:
    base = yaml.safe_load(Path(base_path).read_text())
    preset = yaml.safe_load(Path(preset_path).read_text()) or {}
    return merge(base, preset)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset", help="name of a file in params/ (micro, real, smollm2)")
    parser.add_argument("--base", default="params.yaml")
    parser.add_argument("--out", default="params.yaml")
    args = parser.parse_args(argv)
    preset_path = Path("params") / f"{args.preset}.yaml"
    if not preset_path.exists():
        names = sorted(p.stem for p in Path("params").glob("*.yaml"))
        raise SystemExit(f"error: no preset {preset_path}; available: {', '.join(names)}")
    merged = apply_preset(args.base, preset_path)
    from pipa.config import validate
    from pipa.losses import ALGORITHMS

    validate(merged, f"{args.base} + {preset_path}", ALGORITHMS)
    Path(args.out).write_text(yaml.safe_dump(merged, sort_keys=False, width=100))
    print(f"wrote {args.out} = {args.base} + {preset_path}")


if __name__ == "__main__":
    main()
