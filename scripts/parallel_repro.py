"""`dvc repro` with several DVC processes at once: what `scripts/repro.sh` runs.

    python scripts/parallel_repro.py                 # the whole pipeline, as `dvc repro`
    python scripts/parallel_repro.py --force         # every stage, as `dvc repro --force`
    python scripts/parallel_repro.py --force --keep base   # every stage but base, which
                                                     # runs only if DVC finds it changed
    python scripts/parallel_repro.py report --jobs 2 # `report` and what it needs
    python scripts/parallel_repro.py --dry           # print the waves, run nothing
    python scripts/parallel_repro.py --cold          # no warm starts (same numbers)
    python scripts/parallel_repro.py -s -f cell1 cell2   # just these, as `dvc repro -s -f`

Why: `dvc repro` runs one stage at a time, and a stage of the default is mostly start-up
(importing torch and transformers, loading two small models) and DVC's bookkeeping
(checking deps, hashing outputs, rewriting dvc.lock), all on one core; only its training
and decoding use more. Several stages at once fill the idle cores.

How many (``--jobs``, default ``default_jobs``): on the CPU, the cores this process may
use (``os.sched_getaffinity``) divided by the threads each job of a stage keeps
(``runtime.threads // runtime.workers``), at least one: two on the default's 2 cores, 16
on a 16-core workstation. When the stages run on a GPU (``runtime.device: cuda``, or
``auto`` with a GPU that torch sees) one: stages side by side would compete for it.

How: the stages that need running (DVC's status: changed, plus everything downstream of
them; all with ``--force``) are grouped in waves: the stages of a wave do not depend on
each other, and each wave starts when the one before it has finished. A wave's stages are
split among ``--jobs`` processes `dvc --wait-for-lock repro --single-item <stages...>`
(longest first, by the times in runs/timing.json). This is DVC's own concurrency: DVC
releases its repository lock while a stage's command runs and takes it back to record the
results, and its per-stage read/write locks keep two processes off the same outputs.
Side by side, each stage runs its jobs inline (``PIPA_MAX_WORKERS``, pipa/parallel.py)
with the threads per job that runtime.threads / runtime.workers give it anyway, so every
number is the one plain `dvc repro` gives, however many processes run side by side
(tests/test_pipeline_reruns.py checks it). At the end
a plain `dvc repro` confirms that nothing is left to run (it runs whatever is).

Each stage starts warm (scripts/warm_start.py): in a fork of one server that has torch,
transformers and the model code imported, seconds of one core saved per stage, the same
bytes written (``--cold``: every stage starts its own interpreter, as under plain `dvc
repro`; off under ``runtime.launcher`` and on a GPU).

``--keep STAGE`` (with ``--force``): that stage is not forced; at its turn DVC re-runs it
only if its inputs or outputs changed, as plain `dvc repro` would. CI uses it for ``base``:
the base models are committed to git (``models/base``, ``cache: false`` in dvc.yaml), so
the study is reproduced from them, and pretraining runs again exactly when its code,
params or data changed, or the folder is missing (README, "Reproducing on another machine").

A failing stage lets the other processes of its wave finish (what they finish is
recorded), then stops the run, naming the stage, with the end of its output.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parents[1]))  # pipa, for params

from stage_commands import ordered_stages, pipeline_graph, stage_waves
from stage_times import StageClock, report
from warm_start import warm_starts


def stages_to_run(stages: list, targets: list[str], force: bool, single_item: bool) -> list:
    """``stages`` (dependency order) that `dvc repro` would look at again: all with
    ``force``; else those DVC's status reports changed, and everything downstream of them
    (DVC still skips each one whose inputs turn out unchanged)."""
    if force:
        return stages
    from dvc.repo import Repo

    with Repo(".") as repo:
        changed = set(repo.status(targets=targets or None,
                                  with_deps=bool(targets) and not single_item))
    graph = pipeline_graph()
    chosen: set = set()
    for stage in stages:  # dependency order: a stage's upstream is decided before it
        if stage.addressing in changed or any(d in chosen for d in graph.successors(stage)):
            chosen.add(stage)
    return [s for s in stages if s in chosen]


def split(names: list[str], jobs: int, seconds: dict[str, float]) -> list[list[str]]:
    """``names`` in at most ``jobs`` groups of about equal time: longest first, each to the
    group that is least loaded (stages never timed count as the mean of those that were)."""
    known = [seconds[n] for n in names if n in seconds]
    default = sum(known) / len(known) if known else 1.0
    groups: list[tuple[float, list[str]]] = [(0.0, []) for _ in range(min(jobs, len(names)))]
    for name in sorted(names, key=lambda n: -seconds.get(n, default)):
        k = min(range(len(groups)), key=lambda i: groups[i][0])
        load, members = groups[k]
        groups[k] = (load + seconds.get(name, default), [*members, name])
    return [members for _, members in groups if members]


def stream_dvc(cmd: list[str], env: dict | None = None, prefix: str = "",
               out_lock: threading.Lock | None = None) -> tuple[int, dict[str, float], str]:
    """Run a `dvc repro` command, echoing its output (each line after ``prefix``) and timing
    its stages; return its exit code, the stage times and the end of its output."""
    clock, tail = StageClock(), collections.deque(maxlen=40)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, bufsize=1)
    assert proc.stdout is not None
    for line in proc.stdout:
        clock.feed(line)
        tail.append(line)
        with out_lock or contextlib.nullcontext():
            sys.stdout.write(prefix + line)
            sys.stdout.flush()
    return proc.wait(), clock.close(), "".join(tail)


def group_commands(names: list[str], force: bool, keep: frozenset = frozenset()) -> list:
    """The `dvc repro --single-item` commands of one process's share of a wave: one over
    ``names``, ``--force`` when forcing; under ``--force`` the ``keep`` stages among them
    in a second command without it (DVC then runs them only if they changed)."""
    forced = [n for n in names if not (force and n in keep)]
    kept = [n for n in names if force and n in keep]
    base = ["dvc", "--wait-for-lock", "repro", "--single-item"]
    return ([[*base, *(["--force"] if force else []), *forced]] if forced else []) + \
        ([[*base, *kept]] if kept else [])


def run_group(k: int, names: list[str], force: bool, env: dict, prefix: bool,
              out_lock: threading.Lock, results: dict, keep: frozenset = frozenset()) -> None:
    """The commands of ``group_commands``, one after the other (the first failure ends the
    group), prefixed with the group's number when several run."""
    rc, times, tail = 0, {}, ""
    for cmd in group_commands(names, force, keep):
        rc, cmd_times, tail = stream_dvc(cmd, env, f"[{k}] " if prefix else "", out_lock)
        times.update(cmd_times)
        if rc != 0:
            break
    results[k] = (rc, times, tail, names)


def run_wave(names: list[str], jobs: int, workers: int, force: bool,
             seconds: dict[str, float], warm_env: dict,
             keep: frozenset = frozenset()) -> tuple[dict[str, float], list]:
    """Run one wave (``warm_env``: the variables of ``warm_starts``, or none); return the
    stage times and the failed groups."""
    groups = split(names, jobs, seconds)
    env = dict(os.environ, **warm_env)
    if len(groups) > 1:  # side by side: each stage's jobs inline, same numbers
        env["PIPA_MAX_WORKERS"] = str(max(1, workers // len(groups)))
    out_lock, results = threading.Lock(), {}
    threads = [threading.Thread(target=run_group,
                                args=(k, group, force, env, len(groups) > 1, out_lock, results,
                                      keep))
               for k, group in enumerate(groups, 1)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    times: dict[str, float] = {}
    for _, stage_times, _, _ in results.values():
        times.update(stage_times)
    return times, [r for r in results.values() if r[0] != 0]


def runtime_params() -> dict:
    """params.yaml's ``runtime`` section."""
    from pipa.config import get, load_params

    return get(load_params(), "runtime")


def usable_cores() -> int:
    """The cores this process may run on (its CPU affinity), else all the machine has."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # no sched_getaffinity (macOS)
        return os.cpu_count() or 1


def stages_on_gpu(device: str) -> bool:
    """Whether the stages run on a GPU under ``runtime.device`` (resolved as the stages
    resolve it: ``pipa.hardware.resolve_device``; torch is imported only for ``auto``)."""
    if device == "cpu":
        return False
    if device == "cuda":
        return True
    from pipa.hardware import resolve_device

    return resolve_device(device).type == "cuda"


def default_jobs(runtime: dict) -> int:
    """DVC processes at once without ``--jobs``: one when the stages run on a GPU (side by
    side they would compete for it); on the CPU the usable cores over the threads each job
    of a stage keeps (``runtime.threads // runtime.workers``), at least one. The numbers do
    not depend on it (``run_wave``)."""
    if stages_on_gpu(str(runtime["device"])):
        return 1
    per_job = max(1, int(runtime["threads"]) // max(1, int(runtime["workers"])))
    return max(1, usable_cores() // per_job)


def warm_starts_apply(runtime: dict, stages: list) -> bool:
    """Whether the stages start warm (scripts/warm_start.py): some run ``python stages/``,
    plainly (``runtime.launcher`` empty: a launcher starts its own processes), on the CPU
    (a GPU's stages run one at a time, where start-up matters less)."""
    plain = [s for s in stages if str(s.cmd).lstrip().startswith("python stages/")]
    return bool(plain) and runtime["launcher"] == "" and not stages_on_gpu(str(runtime["device"]))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", help="stages (default: the whole pipeline)")
    parser.add_argument("-f", "--force", action="store_true",
                        help="re-run every stage (of the targets), as `dvc repro --force`")
    parser.add_argument("--keep", action="append", default=[], metavar="STAGE",
                        help="with --force: do not force STAGE (repeatable); DVC re-runs it "
                             "only if it changed (CI: --keep base, the committed base models)")
    parser.add_argument("--jobs", type=int, default=None,
                        help="DVC processes at once (default: on the CPU the usable cores / "
                             "(runtime.threads // runtime.workers); 1 when the stages run "
                             "on a GPU)")
    parser.add_argument("--timing", default="runs/timing.json",
                        help="per-stage wall times: read to balance the processes, updated")
    parser.add_argument("-s", "--single-item", action="store_true",
                        help="only the targets, not what they depend on (`dvc repro -s`)")
    parser.add_argument("--dry", action="store_true", help="print the waves and stop")
    parser.add_argument("--cold", action="store_true",
                        help="every stage starts its own interpreter (no warm starts: "
                             "scripts/warm_start.py); the numbers are the same")
    args = parser.parse_args(argv)
    runtime = runtime_params()
    workers = int(runtime["workers"])
    jobs = default_jobs(runtime) if args.jobs is None else args.jobs
    if jobs < 1:
        sys.exit(f"error: --jobs {jobs}: expected 1 or more DVC processes")
    timing = Path(args.timing)
    seconds = json.loads(timing.read_text()) if timing.exists() else {}

    started = time.time()
    if args.single_item and not args.targets:
        sys.exit("error: --single-item needs stage names (as `dvc repro -s`)")
    stages = ordered_stages(args.targets)
    unknown = sorted(set(args.keep) - {s.addressing for s in stages})
    if unknown:
        sys.exit(f"error: --keep {' '.join(unknown)}: not a stage of this run (dvc.yaml; "
                 "`python scripts/parallel_repro.py --dry` lists them)")
    if args.single_item:
        stages = [s for s in stages if s.addressing in args.targets]
    todo = stages_to_run(stages, args.targets, args.force, args.single_item)
    wave_of = stage_waves(todo)
    waves: dict[int, list[str]] = {}
    for stage in todo:
        waves.setdefault(wave_of[stage], []).append(stage.addressing)
    if not todo:
        print("Data and pipelines are up to date.")
        return
    if args.dry:
        how = "--jobs" if args.jobs else ("default: usable cores / (runtime.threads // "
                                          "runtime.workers), 1 when the stages run on a GPU")
        print(f"{jobs} DVC process(es) at once ({how})")
        for w, names in sorted(waves.items()):
            for k, group in enumerate(split(names, jobs, seconds), 1):
                kept = [n for n in group if args.force and n in args.keep]
                note = f" ({' '.join(kept)}: not forced, runs if changed)" if kept else ""
                print(f"wave {w}, process {k}: {' '.join(group)}{note}")
        return

    known = {stage.addressing for stage in pipeline_graph()}  # what timing.json may keep
    warm = not args.cold and warm_starts_apply(runtime, todo)
    with (warm_starts(shutil.which("python") or sys.executable) if warm
          else contextlib.nullcontext(({}, lambda: 0))) as (warm_env, warm_count):
        run_waves(waves, jobs, workers, args, seconds, warm_env, started, timing, known)
        if warm:
            served = warm_count()
            print(f"[warm] {served} stage command(s) started warm, torch and "
                  "transformers already imported (scripts/warm_start.py; --cold: none)",
                  flush=True)
            if served == 0:  # same numbers, only slower: say so, do not fail
                print("[warm] warning: no stage started warm; the warm-start server did not "
                      "run (its error, if any, is above)", flush=True)


def run_waves(waves: dict[int, list[str]], jobs: int, workers: int, args, seconds: dict,
              warm_env: dict, started: float, timing: Path, known: set) -> None:
    """The waves one after the other, then the closing `dvc repro`; stop at a failure."""
    times: dict[str, float] = {}
    for w, names in sorted(waves.items()):
        began = time.time()
        wave_times, failed = run_wave(names, jobs, workers, args.force, seconds, warm_env,
                                      frozenset(args.keep))
        times.update(wave_times)
        print(f"[waves] wave {w}: {len(names)} stages, {time.time() - began:.1f} s", flush=True)
        if failed:
            for rc, _, tail, group in failed:
                print(f"--- `dvc repro` of {' '.join(group)} failed (exit {rc}); end of its "
                      f"output:\n{tail}", flush=True)
            report(times, time.time() - started, timing, known)
            sys.exit(f"error: wave {w} failed; fix the stage above, then run this again "
                     "(finished stages are recorded and will not run again)")
    # DVC's own last word: plain `dvc repro` finds nothing to do (or does what is left).
    closing = ["dvc", "repro", *(["--single-item"] if args.single_item else []), *args.targets]
    rc, closing_times, _ = stream_dvc(closing, dict(os.environ, **warm_env))
    times.update(closing_times)
    report(times, time.time() - started, timing, known)
    if rc != 0:
        sys.exit(f"error: the closing `dvc repro` failed (exit {rc})")


if __name__ == "__main__":
    main()
