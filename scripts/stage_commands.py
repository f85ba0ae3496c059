"""Print the pipeline's stage commands, resolved from dvc.yaml and params.yaml, dependencies
first: a plain shell script that runs the stages without DVC.

    python scripts/stage_commands.py                 # every stage
    python scripts/stage_commands.py report          # what `dvc repro report` would run
    python scripts/stage_commands.py --shell > run_stages.sh
    python scripts/stage_commands.py --run --jobs 8 report   # run them, in parallel waves
    python scripts/stage_commands.py --plan > plan.tsv       # ... or run them elsewhere,
    python scripts/stage_commands.py --run --plan-file plan.tsv   # without DVC

What it is for: running stages where DVC is not installed (a GPU box's own Python, a job
script on a cluster). The commands are DVC's own, with `${...}` and `matrix:` resolved
(the training commands start with params' `runtime.launcher`, empty by default:
docs/real_setting.md); the outputs are those of `dvc repro` (afterwards `dvc commit`
records them). Every stage is listed, whether or not it is up to date.

``--run`` executes them in waves: a stage's wave is one more than the latest wave of the
stages it depends on, so the stages of one wave are independent and run side by side
(``--jobs``); each stage's output goes to ``--logs/<stage>.log``. The first failing stage
stops the run after its wave, with the end of its log. ``--python`` replaces the leading
``python`` of each command (another interpreter); ``--skip`` leaves stages out (and what
depends on them).
"""

from __future__ import annotations

import argparse
import functools
import shlex
import sys


@functools.cache
def pipeline_graph():
    """DVC's stage graph of this repo: edges run from a stage to the stages it depends on.
    Built once: stage objects of two builds are not the same nodes."""
    from dvc.repo import Repo

    return Repo(".").index.graph


def ordered_stages(targets: list[str]) -> list:
    """The stages of ``targets`` (all stages if none) with every dependency before its
    dependents, in DVC's own order (the post-order of the dependency graph)."""
    import networkx as nx

    graph = pipeline_graph()
    by_name = {stage.addressing: stage for stage in graph}
    if targets:
        unknown = [t for t in targets if t not in by_name]
        if unknown:
            sys.exit(f"error: no stage {', '.join(unknown)} in dvc.yaml; `dvc stage list` "
                     "names them")
        roots = [by_name[t] for t in targets]
    else:
        roots = sorted(graph, key=lambda s: s.addressing)
    order, seen = [], set()
    for root in roots:
        for stage in nx.dfs_postorder_nodes(graph, root):
            if stage not in seen and getattr(stage, "cmd", None):
                seen.add(stage)
                order.append(stage)
    return order


def stage_waves(stages: list) -> dict:
    """Stage -> wave: 0 without upstream stages among ``stages``, else one more than the
    latest wave of its dependencies (``stages`` is in dependency order). The stages of one
    wave do not depend on each other."""
    graph = pipeline_graph()
    wave: dict = {}
    for stage in stages:
        deps = [d for d in graph.successors(stage) if d in wave]
        wave[stage] = 1 + max((wave[d] for d in deps), default=-1)
    return wave


def plan_rows(stages: list) -> list[tuple[int, str, str]]:
    """``(wave, stage, command)`` for each command (``stage_waves``)."""
    wave = stage_waves(stages)
    rows = []
    for stage in stages:
        for cmd in stage.cmd if isinstance(stage.cmd, list) else [stage.cmd]:
            # strip: an empty runtime.launcher leaves a leading space (`${runtime.launcher} python`)
            rows.append((wave[stage], stage.addressing, cmd.strip()))
    return rows


def read_plan(path: str) -> list[tuple[int, str, str]]:
    """Rows written by ``--plan`` (wave, stage, command; tab-separated)."""
    rows = []
    with open(path) as fh:
        lines = fh.read().splitlines()
    for n, line in enumerate(lines, 1):
        parts = line.split("\t", 2)
        if len(parts) != 3 or not parts[0].isdigit():
            sys.exit(f"error: {path}, line {n}: expected 'wave<TAB>stage<TAB>command' "
                     "(write the file with --plan)")
        rows.append((int(parts[0]), parts[1], parts[2]))
    return rows


def run_waves(rows: list[tuple[int, str, str]], jobs: int, logs: str,
              python: str | None) -> None:
    """Run the commands wave by wave, up to ``jobs`` stages at a time."""
    import subprocess
    import time
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    Path(logs).mkdir(parents=True, exist_ok=True)
    by_wave: dict[int, dict[str, list[str]]] = {}
    for wave, name, cmd in rows:
        by_wave.setdefault(wave, {}).setdefault(name, []).append(cmd)

    def run_one(item: tuple[str, list[str]]) -> tuple[str, int, float, Path]:
        name, cmds = item
        log = Path(logs) / f"{name.replace('/', '_')}.log"
        started = time.perf_counter()
        rc = 0
        with log.open("w") as fh:
            for cmd in cmds:
                if python and cmd.startswith("python "):
                    cmd = f"{python} {cmd[len('python '):]}"
                rc = subprocess.run(cmd, shell=True, stdout=fh, stderr=subprocess.STDOUT,
                                    check=False).returncode
                if rc:
                    break
        return name, rc, time.perf_counter() - started, log

    for wave in sorted(by_wave):
        with ThreadPoolExecutor(max_workers=max(1, jobs)) as pool:
            results = list(pool.map(run_one, by_wave[wave].items()))
        for name, rc, seconds, _ in results:
            state = "ok" if not rc else f"FAILED (exit {rc})"
            print(f"wave {wave}: {name} {state} {seconds:.1f} s", flush=True)
        failed = [r for r in results if r[1]]
        if failed:
            for name, rc, _, log in failed:
                tail = "\n".join(log.read_text(errors="replace").splitlines()[-25:])
                print(f"--- {name} (exit {rc}), end of {log}:\n{tail}", flush=True)
            sys.exit(f"error: {len(failed)} stage(s) failed in wave {wave}: "
                     f"{', '.join(r[0] for r in failed)}")


def without(stages: list, skip: list[str]) -> list:
    """``stages`` less those named in ``skip`` and every stage downstream of them."""
    if not skip:
        return stages
    graph = pipeline_graph()
    dropped = {s for s in stages if s.addressing in skip}
    for stage in stages:  # dependency order: upstream decisions are made first
        if any(d in dropped for d in graph.successors(stage)):
            dropped.add(stage)
    return [s for s in stages if s not in dropped]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("targets", nargs="*", help="stage names (default: every stage)")
    out = parser.add_mutually_exclusive_group()
    out.add_argument("--shell", action="store_true",
                     help="print a bash script: `set -e`, a `# stage` comment per command")
    out.add_argument("--plan", action="store_true",
                     help="print 'wave<TAB>stage<TAB>command' rows (for --run --plan-file)")
    out.add_argument("--run", action="store_true", help="run the commands in waves")
    parser.add_argument("--plan-file", default=None,
                        help="with --run: the rows of a --plan (no DVC needed to run them)")
    parser.add_argument("--jobs", type=int, default=1, help="stages run side by side (--run)")
    parser.add_argument("--logs", default="runs/stage_logs", help="per-stage logs (--run)")
    parser.add_argument("--python", default=None, help="interpreter instead of `python`")
    parser.add_argument("--skip", nargs="*", default=[],
                        help="stages to leave out, with everything downstream of them")
    args = parser.parse_args(argv)
    if args.run and args.plan_file:
        run_waves(read_plan(args.plan_file), args.jobs, args.logs, args.python)
        return
    rows = plan_rows(without(ordered_stages(args.targets), args.skip))
    if args.run:
        run_waves(rows, args.jobs, args.logs, args.python)
    elif args.plan:
        for wave, name, cmd in rows:
            print(f"{wave}\t{name}\t{cmd}")
    else:
        if args.shell:
            print("#!/usr/bin/env bash\n# Generated by scripts/stage_commands.py: the "
                  "pipeline's commands, dependencies first.\nset -euo pipefail")
        for _, name, cmd in rows:
            print(f"# {name}\n{cmd}" if args.shell else f"{shlex.quote(name)}\t{cmd}")


if __name__ == "__main__":
    main()
