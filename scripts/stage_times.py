"""Pass `dvc repro` output through, timing each stage; print a summary, write runs/timing.json.

Usage: dvc repro 2>&1 | python scripts/stage_times.py [runs/timing.json]
"""

import json
import re
import subprocess
import sys
import time
from pathlib import Path

out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/timing.json")
start = time.time()
current, began, times = None, start, {}
for line in sys.stdin:
    sys.stdout.write(line)
    sys.stdout.flush()
    match = re.match(r"Running stage '([^']+)'", line)
    if match or line.startswith(("Updating lock file", "Use `dvc push`")):
        if current is not None:
            times[current] = round(times.get(current, 0.0) + time.time() - began, 1)
            current = None
        if match:
            current, began = match.group(1), time.time()
if current is not None:
    times[current] = round(time.time() - began, 1)
total = time.time() - start
if times:
    groups: dict[str, float] = {}
    for stage, sec in times.items():
        name = stage.split("@")[0]
        groups[name] = groups.get(name, 0.0) + sec
    print(f"\n[timing] {len(times)} stages ran, {total / 60:.1f} min wall in all")
    for name, sec in sorted(groups.items(), key=lambda kv: -kv[1]):
        print(f"[timing]   {name:<24} {sec / 60:6.1f} min")
    out.parent.mkdir(parents=True, exist_ok=True)
    # Keep earlier times of stages this run skipped (the file covers the whole pipeline),
    # but drop stages that no longer exist in dvc.yaml.
    previous = json.loads(out.read_text()) if out.exists() else {}
    listed = subprocess.run(["dvc", "stage", "list", "--name-only"], capture_output=True,
                            text=True, check=False)
    if listed.returncode == 0:
        current = set(listed.stdout.split())
        previous = {k: v for k, v in previous.items() if k in current}
    out.write_text(json.dumps({**previous, **times}, indent=1, sort_keys=True) + "\n")
