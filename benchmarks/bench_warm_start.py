"""Stage start-up: a cold interpreter against a warm start (scripts/warm_start.py), for a
stage script that imports what a grid cell imports (``stages/align.py``'s imports, then
what its run imports on the way: the model classes, peft, accelerate, dvclive) and exits.

    OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_warm_start.py

Both run the command the way DVC does (``python stages/<script>.py`` through the shell),
alternately, ``REPEATS`` times each, one at a time, after one untimed warm start. Last line: the ratio of the median
times (cold / warm) and the seconds a warm start saves per stage.
"""

from __future__ import annotations

import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from warm_start import warm_starts

REPEATS = 5
PROBE = """\
import _boot
from pipa.align import align_cell
from pipa.evaluation import evaluate_folder
from pipa.losses import ALGORITHMS
from pipa.training import end_distributed, is_main_process
import accelerate, dvclive, peft
from transformers import AutoModelForCausalLM, LlamaForCausalLM, Qwen2ForCausalLM
"""


def seconds(command: str, env: dict) -> float:
    started = time.perf_counter()
    subprocess.run(command, shell=True, cwd=ROOT, env=env, check=True)
    return time.perf_counter() - started


def main() -> None:
    # killed (timeout, Ctrl-C): still take the probe out of stages/, where the code
    # manifests would see it
    signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    with tempfile.NamedTemporaryFile("w", suffix=".py", dir=ROOT / "stages",
                                     prefix="bench_probe_", delete=False) as probe:
        probe.write(PROBE)
    command = f"python stages/{Path(probe.name).name}"
    try:
        with warm_starts(sys.executable) as (extra, count):
            warm_env = dict(os.environ, **extra)
            # untimed: the server listens at once and imports after, so the first warm
            # start waits for those imports
            seconds(command, warm_env)
            cold, warm = [], []
            for _ in range(REPEATS):
                cold.append(seconds(command, dict(os.environ)))
                warm.append(seconds(command, warm_env))
            assert count() == REPEATS + 1, "a start meant to be warm ran cold"
    finally:
        os.unlink(probe.name)
    cold_s, warm_s = statistics.median(cold), statistics.median(warm)
    print(f"cold start {cold_s:.2f} s, warm start {warm_s:.2f} s (medians of {REPEATS})")
    print(f"ratio_cold_over_warm={cold_s / warm_s:.1f} saved_per_stage_s={cold_s - warm_s:.2f}")


if __name__ == "__main__":
    main()
