"""The micro pipeline the integration tests share (tests/test_pipeline*.py), and their helpers.

``micro_pipeline(tmp_path_factory)`` reproduces the whole micro pipeline once per test
session, in a scratch copy of the working tree with the network unreachable, the main job's
way (scripts/parallel_repro.py). Under pytest-xdist every worker asks for it: the first
builds it under a file lock in the session's shared temporary folder, the others wait for
that lock and reuse the result (a failed build is recorded, so they fail at once instead of
building it again). The tests only read it, or copy it (``copy_repo``) before they change
anything, so the pipeline's two test files run on two workers side by side.
"""

from __future__ import annotations

import fcntl
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]

# Hub and network unreachable: offline flags, proxies pointing at a closed local port.
OFFLINE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "HTTP_PROXY": "http://127.0.0.1:9",
    "HTTPS_PROXY": "http://127.0.0.1:9",
    "http_proxy": "http://127.0.0.1:9",
    "https_proxy": "http://127.0.0.1:9",
    "NO_PROXY": "",
    "DVC_NO_ANALYTICS": "1",
    "OMP_NUM_THREADS": "2",
    "GIT_AUTHOR_NAME": "test",
    "GIT_AUTHOR_EMAIL": "test@example.invalid",
    "GIT_COMMITTER_NAME": "test",
    "GIT_COMMITTER_EMAIL": "test@example.invalid",
}


def run(cmd: list[str], cwd: Path, timeout: int = 900, check: bool = True):
    env = dict(os.environ, **OFFLINE_ENV)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env['PATH']}"
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, check=False,
                          timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({proc.returncode}):\n"
                             f"{proc.stdout[-4000:]}\n{proc.stderr[-4000:]}")
    return proc


def stages_ran(output: str) -> set[str]:
    """Stages that ran, or were restored from DVC's run-cache (same inputs seen before)."""
    ran = re.findall(r"Running stage '([^']+)'", output)
    restored = re.findall(r"Stage '([^']+)' is cached - skipping run", output)
    return set(ran) | set(restored)


def make_micro_repo(dest: Path) -> Path:
    """Copy the working tree (tracked + untracked, not ignored) and apply the micro preset."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    for rel in filter(None, files):
        src = ROOT / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    run([sys.executable, "-m", "pipa.preset", "micro"], dest)
    # The real benchmark files are tracked in the repository (data/benchmarks), so the copy
    # holds them and params' relative benchmark_dir resolves inside it.
    params = yaml.safe_load((dest / "params.yaml").read_text())
    bench = dest / params["data"]["benchmark_dir"]
    assert (bench / "graded_outputs").is_dir() and bench.resolve().is_relative_to(dest.resolve())
    run(["git", "init", "-q"], dest)
    run(["git", "add", "-A"], dest)
    run(["git", "commit", "-qm", "micro"], dest)
    return dest


def copy_repo(src: Path, dest: Path) -> Path:
    """A copy to change freely. DVC's own scratch folder (.dvc/tmp: its locks) stays behind:
    a test on another worker may be running `dvc` in ``src`` at that moment."""
    def scratch(folder: str, names: list[str]) -> list[str]:
        return ["tmp"] if Path(folder) == src / ".dvc" else []

    shutil.copytree(src, dest, symlinks=True, ignore=scratch)
    return dest


def lock_outs(repo: Path) -> dict[str, str]:
    """Output path -> md5 recorded in dvc.lock."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    return {o["path"]: o.get("md5", "") for st in lock["stages"].values()
            for o in st.get("outs", [])}


def micro_pipeline(tmp_path_factory) -> Path:
    """The micro repository, reproduced (see the module docstring); built at most once per
    session, whichever worker asks first."""
    shared = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        shared = shared.parent  # the workers' base folders sit side by side in it
    repo, done, failed = (shared / "micro", shared / "micro.reproduced",
                          shared / "micro.failed")
    with open(shared / "micro.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        if failed.exists():
            raise AssertionError(f"the micro pipeline failed on another worker:\n"
                                 f"{failed.read_text()}")
        if not done.exists():
            try:
                _reproduce(repo)
                done.touch()
            except BaseException as error:
                failed.write_text(str(error)[-8000:])
                raise
    return repo


def _reproduce(repo: Path) -> None:
    """The micro pipeline reproduced the main job's way (scripts/parallel_repro.py: two DVC
    processes on two cores, half the wall time of one, stages started warm);
    test_a_cell_rerun_the_other_way_gives_the_same_bytes runs plain `dvc repro` against it."""
    if repo.exists():
        shutil.rmtree(repo)  # a build interrupted before it finished
    repo.mkdir()
    make_micro_repo(repo)
    proc = run([sys.executable, "scripts/parallel_repro.py", "--jobs", "2"], repo,
               timeout=1500)
    assert re.search(r"^\[2\] Running stage '", proc.stdout, re.MULTILINE), proc.stdout[-3000:]
    assert "Running stage 'report'" in proc.stdout
    assert "Data and pipelines are up to date" in proc.stdout  # the closing `dvc repro`
    # Stages started warm (scripts/warm_start.py): all of them in practice (the server
    # listens before it imports); the first wave's are excused, as one could ask before the
    # server's own interpreter is up. The reruns compare the bytes with cold ones.
    warm = re.search(r"^\[warm\] (\d+) stage", proc.stdout, re.MULTILINE)
    first_wave = re.search(r"^\[waves\] wave 0: (\d+) stages", proc.stdout, re.MULTILINE)
    assert warm and first_wave, proc.stdout[-3000:]
    assert int(warm[1]) >= len(stages_ran(proc.stdout)) - int(first_wave[1]), warm[0]
    run(["git", "add", "-A"], repo)
    run(["git", "commit", "-qm", "repro"], repo)
