"""Pass `dvc repro` output through, timing each stage; print a summary, write runs/timing.json.

Usage: dvc repro 2>&1 | python scripts/stage_times.py [runs/timing.json]

``StageClock`` and ``report`` are also what scripts/parallel_repro.py times its DVC
processes with (one clock per process).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
from pathlib import Path

_RUNNING = re.compile(r"Running stage '([^']+)'")


class StageClock:
    """Wall time of each stage in one `dvc repro` output stream: from its "Running stage"
    line to the next stage's, or to DVC's closing lines."""

    def __init__(self) -> None:
        self.times: dict[str, float] = {}
        self._current: str | None = None
        self._began = time.time()

    def feed(self, line: str) -> None:
        match = _RUNNING.match(line)
        if match or line.startswith(("Updating lock file", "Use `dvc push`")):
            self._stop()
            if match:
                self._current, self._began = match.group(1), time.time()

    def close(self) -> dict[str, float]:
        self._stop()
        return self.times

    def _stop(self) -> None:
        if self._current is not None:
            elapsed = time.time() - self._began
            self.times[self._current] = round(self.times.get(self._current, 0.0) + elapsed, 1)
            self._current = None


def report(times: dict[str, float], total: float, out: Path,
           stages: set[str] | None = None) -> None:
    """Print the per-stage-group summary and merge ``times`` into ``out``; earlier times of
    stages no longer in dvc.yaml (``stages``; asked of DVC when not given) are dropped."""
    if not times:
        return
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
    if stages is None:
        listed = subprocess.run(["dvc", "stage", "list", "--name-only"], capture_output=True,
                                text=True, check=False)
        stages = set(listed.stdout.split()) if listed.returncode == 0 else None
    if stages is not None:
        previous = {k: v for k, v in previous.items() if k in stages}
    out.write_text(json.dumps({**previous, **times}, indent=1, sort_keys=True) + "\n")


def main() -> None:
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "runs/timing.json")
    start = time.time()
    clock = StageClock()
    for line in sys.stdin:
        sys.stdout.write(line)
        sys.stdout.flush()
        clock.feed(line)
    report(clock.close(), time.time() - start, out)


if __name__ == "__main__":
    main()
