"""scripts/stage_commands.py: the pipeline's commands without DVC, in dependency waves."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "stage_commands.py"


def _plan(*args: str) -> list[tuple[int, str, str]]:
    out = subprocess.run([sys.executable, str(SCRIPT), "--plan", *args], cwd=ROOT, check=True,
                         capture_output=True, text=True).stdout
    return [(int(w), name, cmd) for w, name, cmd in (ln.split("\t", 2) for ln in out.splitlines())]


@pytest.fixture(scope="module")
def plan() -> list[tuple[int, str, str]]:
    return _plan()


def test_every_stage_comes_after_what_it_depends_on(plan):
    wave = {name: w for w, name, _ in plan}
    assert wave["preflight"] == 0  # every stage depends on its script's code manifest
    assert wave["world"] == 1
    assert wave["base"] == 2
    assert wave["sample"] > wave["base"]
    assert wave["sft@ds"] > wave["sample"] and wave["prior@ds"] > wave["sft@ds"]
    cells = [n for n in wave if n.startswith("align_")]
    assert len(cells) > 60
    assert all(wave[c] > wave["prior@ds"] for c in cells)
    assert wave["report"] > max(wave[c] for c in cells)
    # resolved commands, exactly as dvc.yaml declares them
    cmd = {name: c for _, name, c in plan}
    assert cmd["align_unpaired_step@pipa_m-ds-0"].startswith(
        "python stages/align.py --algorithm pipa_m --model ds --seed 0 ")
    assert "${" not in "".join(cmd.values())


def test_targets_and_skip(plan):
    names = [n for _, n, _ in _plan("sft@ds")]
    assert names == ["preflight", "world", "base", "sample", "sft@ds"]
    kept = {n for _, n, _ in _plan("--skip", "sample")}
    assert "world" in kept and "base" in kept
    assert not any(n.startswith(("sample", "sft@", "align_", "report")) for n in kept)


def test_run_from_a_plan_file_runs_waves_and_names_the_failing_stage(tmp_path):
    plan = tmp_path / "plan.tsv"
    out = tmp_path / "out"
    plan.write_text(f"0\tfirst\tmkdir {out}\n1\tsecond\techo two > {out}/two\n"
                    f"1\tbroken\tpython -c 'raise SystemExit(3)'\n2\tnever\ttouch {out}/never\n")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--run", "--plan-file", str(plan), "--jobs", "2",
         "--logs", str(tmp_path / "logs"), "--python", sys.executable],
        cwd=tmp_path, capture_output=True, text=True, env={**os.environ}, check=False)
    assert result.returncode != 0
    assert "1 stage(s) failed in wave 1: broken" in result.stderr
    assert (out / "two").read_text() == "two\n"
    assert not (out / "never").exists()  # the run stops after the failing wave
    assert (tmp_path / "logs" / "broken.log").exists()


def test_malformed_plan_names_the_line(tmp_path):
    plan = tmp_path / "plan.tsv"
    plan.write_text("0\tworld\tpython stages/world.py\nnot a row\n")
    result = subprocess.run([sys.executable, str(SCRIPT), "--run", "--plan-file", str(plan)],
                            cwd=tmp_path, capture_output=True, text=True, check=False)
    assert result.returncode != 0
    assert f"{plan}, line 2: expected 'wave<TAB>stage<TAB>command'" in result.stderr


def _parallel_repro():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        import parallel_repro
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    return parallel_repro


def test_parallel_repro_splits_a_wave_longest_first_onto_the_least_loaded_process():
    split = _parallel_repro().split
    seconds = {"a": 50.0, "b": 30.0, "c": 20.0, "d": 10.0, "e": 10.0}
    groups = split(list(seconds), 2, seconds)
    assert groups == [["a", "d"], ["b", "c", "e"]]       # 60 s and 60 s
    assert split(["x", "y"], 4, {}) == [["x"], ["y"]]   # never more processes than stages
    # a stage never timed counts as the mean of the timed ones (here 40 s)
    assert split(["a", "new", "b"], 2, {"a": 50.0, "b": 30.0}) == [["a"], ["new", "b"]]


def test_parallel_repro_dry_run_lists_each_stage_once_in_dependency_waves():
    out = subprocess.run([sys.executable, "scripts/parallel_repro.py", "--dry", "--force"],
                         cwd=ROOT, check=True, capture_output=True, text=True).stdout
    wave_of = {}
    assert re.match(r"\d+ DVC process\(es\) at once \(default: ", out), out[:200]
    for line in out.splitlines()[1:]:
        head, names = line.split(": ", 1)
        wave = int(head.split(",")[0].removeprefix("wave "))
        for name in names.split():
            assert name not in wave_of, f"{name} listed twice"
            wave_of[name] = wave
    expected = {name for _, name, _ in _plan()}
    assert set(wave_of) == expected
    assert wave_of["base"] < wave_of["sample"] < wave_of["sft@ds"] < wave_of["prior@ds"]
    assert all(wave_of[n] < wave_of["report"] for n in wave_of if n.startswith("align_"))
    # with --jobs 1 every wave is one process
    one = subprocess.run([sys.executable, "scripts/parallel_repro.py", "--dry", "--force",
                          "--jobs", "1"], cwd=ROOT, check=True, capture_output=True,
                         text=True).stdout
    assert "process 2" not in one and "process 1" in one
    assert one.startswith("1 DVC process(es) at once (--jobs)")


def test_parallel_repro_default_jobs_follow_the_cores_and_the_device(monkeypatch):
    """Without --jobs: the usable cores over each job's threads on the CPU (at least one),
    one DVC process when the stages run on a GPU; ``cpu`` never imports torch."""
    pr = _parallel_repro()
    cores = {"n": 16}
    monkeypatch.setattr(pr.os, "sched_getaffinity", lambda pid: set(range(cores["n"])))
    cpu = {"device": "cpu", "threads": 2, "workers": 2}
    assert pr.usable_cores() == 16
    assert pr.default_jobs(cpu) == 16                                 # 1 thread per job
    assert pr.default_jobs({**cpu, "threads": 8, "workers": 2}) == 4  # 4 threads per job
    assert pr.default_jobs({**cpu, "threads": 8, "workers": 1}) == 2
    assert pr.default_jobs({**cpu, "threads": 1, "workers": 4}) == 16  # at least 1 per job
    cores["n"] = 2
    assert pr.default_jobs(cpu) == 2                                  # this machine's default
    assert pr.default_jobs({**cpu, "threads": 8}) == 1                # never below one
    assert pr.default_jobs({**cpu, "device": "cuda"}) == 1
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)     # auto: a GPU is seen
    assert pr.default_jobs({**cpu, "device": "auto"}) == 1
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)    # auto: no GPU
    assert pr.default_jobs({**cpu, "device": "auto"}) == 2
    monkeypatch.delattr(pr.os, "sched_getaffinity")                   # macOS: os.cpu_count()
    monkeypatch.setattr(pr.os, "cpu_count", lambda: 6)
    assert pr.default_jobs(cpu) == 6
    probe = ("import sys; sys.path.insert(0, 'scripts'); import parallel_repro as p; "
             "p.default_jobs({'device': 'cpu', 'threads': 2, 'workers': 2}); "
             "assert 'torch' not in sys.modules")
    subprocess.run([sys.executable, "-c", probe], cwd=ROOT, check=True)


def _toy_dvc_project(folder: Path) -> dict:
    """An empty DVC project (no git) with the runtime params parallel_repro reads; returns
    the environment to run DVC in (this interpreter's dvc first, no inherited worker cap)."""
    env = dict(os.environ, DVC_NO_ANALYTICS="1", PATH=f"{Path(sys.executable).parent}"
               f"{os.pathsep}{os.environ['PATH']}")
    env.pop("PIPA_MAX_WORKERS", None)
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=folder, check=True, env=env)
    (folder / "params.yaml").write_text("runtime: {workers: 2, threads: 2, device: cpu}\n")
    return env


def test_parallel_repro_runs_a_wave_side_by_side_and_stops_on_a_failing_stage(tmp_path):
    """A toy DVC project: two independent stages in one wave, one of them failing, and a
    stage downstream of both. The good one is recorded, the failure named with its output,
    nothing downstream runs; after the fix a second run does only what is left."""
    env = _toy_dvc_project(tmp_path)
    stages = {
        "good": {"cmd": "echo workers=$PIPA_MAX_WORKERS > good.txt", "outs": ["good.txt"]},
        "flaky": {"cmd": "test -f fixed && echo ok > flaky.txt "
                         "|| (echo 'boom: flaky broke'; exit 3)", "outs": ["flaky.txt"]},
        "last": {"cmd": "cat good.txt flaky.txt > last.txt", "deps": ["good.txt", "flaky.txt"],
                 "outs": ["last.txt"]},
    }
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    script = str(SCRIPT.parent / "parallel_repro.py")
    failed = subprocess.run([sys.executable, script, "--timing", "timing.json", "--jobs", "2"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, check=False)
    assert failed.returncode != 0
    assert "`dvc repro` of flaky failed" in failed.stdout and "boom: flaky broke" in failed.stdout
    assert "error: wave 0 failed" in failed.stderr
    # side by side: the good stage ran in the other process, its jobs capped to one worker
    assert (tmp_path / "good.txt").read_text().strip() == "workers=1"
    assert "good:" in (tmp_path / "dvc.lock").read_text()     # recorded
    assert not (tmp_path / "last.txt").exists()
    (tmp_path / "fixed").write_text("")
    again = subprocess.run([sys.executable, script, "--timing", "timing.json"], cwd=tmp_path,
                           env=env, capture_output=True, text=True, check=True)
    ran = set(re.findall(r"Running stage '([^']+)'", again.stdout))
    assert ran == {"flaky", "last"}, again.stdout
    assert (tmp_path / "last.txt").read_text().split() == ["workers=1", "ok"]
    assert "Data and pipelines are up to date" in again.stdout  # the closing `dvc repro`
    # --single-item --force: that stage alone, as `dvc repro -s -f`
    only = subprocess.run([sys.executable, script, "--timing", "timing.json", "-s", "-f",
                           "last"], cwd=tmp_path, env=env, capture_output=True, text=True,
                          check=True)
    assert set(re.findall(r"Running stage '([^']+)'", only.stdout)) == {"last"}, only.stdout


def test_parallel_repro_force_keep_reruns_a_kept_stage_only_when_it_changed(tmp_path):
    """`--force --keep first` (CI's `--keep base`): every other stage is forced, ``first``
    runs only when DVC finds it changed: never while its output is the one dvc.lock
    records, again once that output is missing or its command changed."""
    env = _toy_dvc_project(tmp_path)

    def pipeline(first_cmd: str) -> None:
        stages = {"first": {"cmd": first_cmd, "outs": [{"first.txt": {"cache": False}}]},
                  "second": {"cmd": "cat first.txt > second.txt", "deps": ["first.txt"],
                             "outs": ["second.txt"]}}
        (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))

    def repro(*args: str) -> set[str]:
        out = subprocess.run([sys.executable, str(SCRIPT.parent / "parallel_repro.py"),
                              "--timing", "timing.json", *args], cwd=tmp_path, env=env,
                             capture_output=True, text=True, check=True).stdout
        assert "Data and pipelines are up to date" in out, out  # nothing left to run
        return set(re.findall(r"Running stage '([^']+)'", out))

    pipeline("echo one > first.txt")
    assert repro() == {"first", "second"}
    assert repro("--force", "--keep", "first") == {"second"}
    assert repro("--force") == {"first", "second"}
    (tmp_path / "first.txt").unlink()  # a clone without the committed output
    assert repro("--force", "--keep", "first") == {"first", "second"}
    pipeline("echo two > first.txt")  # its command changed
    assert repro("--force", "--keep", "first") == {"first", "second"}
    assert (tmp_path / "second.txt").read_text().strip() == "two"
    bad = subprocess.run([sys.executable, str(SCRIPT.parent / "parallel_repro.py"), "--force",
                          "--keep", "nosuch"], cwd=tmp_path, env=env, capture_output=True,
                         text=True, check=False)
    assert bad.returncode != 0 and "--keep nosuch: not a stage" in bad.stderr


def test_the_four_setting_stages_differ_only_in_the_setting_name():
    """What dvc.yaml cannot write once (a matrix is a full product; each setting has its
    own algorithm list) is at least kept identical: any other difference is a slip."""
    import yaml

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text())["stages"]
    settings = ("paired_answer", "paired_step", "unpaired_answer", "unpaired_step")
    bodies = set()
    for setting in settings:
        body = dict(stages[f"align_{setting}"])
        assert body["matrix"]["algorithm"] == f"${{algorithms.{setting}}}"
        bodies.add(yaml.safe_dump(body, sort_keys=True).replace(setting, "SETTING"))
    assert len(bodies) == 1, "the align_<setting> stages differ beyond the setting name"
