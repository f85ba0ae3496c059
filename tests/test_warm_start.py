"""scripts/warm_start.py: a stage started from the warm server behaves as a cold one (its
arguments, folder, environment, streams, exit status, traceback), dies with its shim, and
anything else reaches the real interpreter. The micro pipeline's build runs every stage
this way and tests/test_pipeline_reruns.py compares its bytes with cold runs.

The server here preloads ``fractions`` instead of torch (seconds instead of ten), in a
scratch repository laid out as ours: scripts/warm_start.py, stages/_boot.py, a probe stage.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

PROBE = '''\
import os, signal, sys, time
loaded = "fractions" in sys.modules  # preloaded by the server, never by a cold interpreter
import _boot
shim_vars = sorted(k for k in os.environ if k.startswith("PIPA_WARM"))
print("argv", sys.argv[1:], "cwd", os.getcwd(), "X", os.environ.get("X"), "warm", loaded,
      "offline", os.environ.get("HF_HUB_OFFLINE"), "shim vars", shim_vars,
      "shim on PATH", any(p.endswith("/bin") and "pipa-warm-" in p
                          for p in os.environ["PATH"].split(os.pathsep)))
print("to stderr", file=sys.stderr)
if sys.argv[1:2] == ["fail"]:
    raise RuntimeError("planted failure")
if sys.argv[1:2] == ["message"]:
    sys.exit("error: a message")
if sys.argv[1:2] == ["exit"]:
    sys.exit(int(sys.argv[2]))
if sys.argv[1:2] == ["signal"]:
    os.kill(os.getpid(), signal.SIGTERM)
if sys.argv[1:2] == ["interrupt"]:
    raise KeyboardInterrupt
if sys.argv[1:2] == ["sleep"]:
    worker = os.fork()  # as a stage's forked workers
    if worker == 0:
        time.sleep(120)
        os._exit(0)
    open("pids", "w").write(f"{os.getpid()} {worker}")
    time.sleep(120)
'''


@pytest.fixture
def scratch(tmp_path):
    (tmp_path / "scripts").mkdir()
    (tmp_path / "stages").mkdir()
    shutil.copy(ROOT / "scripts/warm_start.py", tmp_path / "scripts")
    shutil.copy(ROOT / "stages/_boot.py", tmp_path / "stages")
    (tmp_path / "stages/probe.py").write_text(PROBE)
    return tmp_path


@contextlib.contextmanager
def warm(scratch: Path, preload: tuple[str, ...] = ("fractions",)):
    """The scratch repository's warm_starts (preloading ``fractions``), once it listens."""
    # The scratch copy, by path: a `warm_start` imported before (parallel_repro's) is ours.
    spec = importlib.util.spec_from_file_location("scratch_warm_start",
                                                  scratch / "scripts/warm_start.py")
    warm_start = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(warm_start)
    with warm_start.warm_starts(sys.executable, preload=preload) as (extra, count):
        deadline = time.time() + 60
        while not Path(extra[warm_start.SOCKET_VAR]).exists():
            assert time.time() < deadline, "the server never listened"
            time.sleep(0.05)
        yield dict(os.environ, X="42", **extra), count


def sh(command: str, cwd: Path, env: dict) -> subprocess.CompletedProcess:
    """``command`` through the shell, as DVC runs a stage's."""
    return subprocess.run(command, shell=True, cwd=cwd, env=env, capture_output=True,
                          text=True, timeout=120, check=False)


def test_a_warm_stage_gets_its_arguments_folder_environment_streams_and_status(scratch):
    with warm(scratch) as (env, count):
        ok = sh("python stages/probe.py a 'b c'", scratch, env)
        code = sh("python stages/probe.py exit 7", scratch, env)
        message = sh("python stages/probe.py message", scratch, env)
        failed = sh("python stages/probe.py fail", scratch, env)
        assert count() == 4
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout == (f"argv ['a', 'b c'] cwd {scratch} X 42 warm True offline 1 "
                         "shim vars [] shim on PATH False\n")
    assert ok.stderr == "to stderr\n"
    assert code.returncode == 7
    assert (message.returncode, message.stderr) == (1, "to stderr\nerror: a message\n")
    # the same traceback as a cold interpreter prints: it starts at the stage's own frame
    cold = sh("python stages/probe.py fail", scratch, dict(os.environ, X="42"))
    assert "warm False" in cold.stdout
    assert failed.returncode == cold.returncode == 1
    assert failed.stderr == cold.stderr
    assert "RuntimeError: planted failure" in failed.stderr
    assert "warm_start.py" not in failed.stderr and "runpy" not in failed.stderr


def test_a_stage_ending_by_a_signal_or_ctrl_c_ends_as_a_cold_one(scratch):
    with warm(scratch) as (env, count):
        warm_runs = [sh(f"python stages/probe.py {how}", scratch, env)
                     for how in ("signal", "interrupt")]
        assert count() == 2
    cold_runs = [sh(f"python stages/probe.py {how}", scratch, dict(os.environ, X="42"))
                 for how in ("signal", "interrupt")]
    for warm_run, cold_run in zip(warm_runs, cold_runs):
        assert warm_run.returncode == cold_run.returncode != 0
        assert warm_run.stderr == cold_run.stderr
    assert cold_runs[0].returncode in (-signal.SIGTERM, 128 + signal.SIGTERM)
    assert cold_runs[1].returncode in (-signal.SIGINT, 128 + signal.SIGINT)
    assert "KeyboardInterrupt" in warm_runs[1].stderr


def _server_pid(address: str) -> int:
    """The warm-start server listening on ``address`` (from /proc)."""
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        with contextlib.suppress(OSError):
            args = cmdline.read_bytes().split(b"\0")
            if b"serve" in args and address.encode() in args:
                return int(cmdline.parent.name)
    raise AssertionError(f"no server process for {address}")


def _started(scratch: Path) -> list[int]:
    """The probe's `sleep` stage and its forked worker, once both run."""
    deadline = time.time() + 60
    while not (scratch / "pids").exists() or len((scratch / "pids").read_text().split()) < 2:
        assert time.time() < deadline, "the stage never started"
        time.sleep(0.05)
    return [int(p) for p in (scratch / "pids").read_text().split()]


def test_ctrl_c_reaches_a_warm_stage_through_the_server(scratch):
    with warm(scratch) as (env, count):
        shim = subprocess.Popen("python stages/probe.py sleep", shell=True, cwd=scratch,
                                env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True)
        pids = _started(scratch)
        assert count() == 1
        # the terminal's Ctrl-C reaches the server, not the stage's own process group
        os.kill(_server_pid(env["PIPA_WARM_SOCKET"]), signal.SIGINT)
        _, stderr = shim.communicate(timeout=30)
        assert shim.returncode in (-signal.SIGINT, 128 + signal.SIGINT), stderr
        assert "KeyboardInterrupt" in stderr
        deadline = time.time() + 10
        while any(_alive(p) for p in pids):
            assert time.time() < deadline, f"stage processes {pids} outlived Ctrl-C"
            time.sleep(0.05)


def test_a_stage_dies_with_a_killed_server(scratch):
    with warm(scratch) as (env, count):
        shim = subprocess.Popen("python stages/probe.py sleep", shell=True, cwd=scratch,
                                env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)
        stage, worker = _started(scratch)
        assert count() == 1
        os.kill(_server_pid(env["PIPA_WARM_SOCKET"]), signal.SIGKILL)
        shim.wait(timeout=30)
        assert shim.returncode != 0
        deadline = time.time() + 10
        try:
            while _alive(stage):
                assert time.time() < deadline, f"the stage {stage} outlived its killed server"
                time.sleep(0.05)
        finally:  # a stage killed outright leaves its workers, cold or warm: not this test's
            with contextlib.suppress(ProcessLookupError):
                os.kill(worker, signal.SIGKILL)


def test_killing_the_shim_kills_the_stage_and_its_forked_workers(scratch):
    with warm(scratch) as (env, count):
        shim = subprocess.Popen("python stages/probe.py sleep", shell=True, cwd=scratch,
                                env=env, start_new_session=True, stdout=subprocess.DEVNULL)
        pids = _started(scratch)
        assert count() == 1  # warm: a cold stage would die with the shim's session anyway
        assert all(Path(f"/proc/{p}").exists() for p in pids)
        os.killpg(shim.pid, signal.SIGKILL)  # as a killed `dvc repro` takes its command
        shim.wait()
        deadline = time.time() + 10
        while any(_alive(p) for p in pids):
            assert time.time() < deadline, f"stage processes {pids} outlived their shim"
            time.sleep(0.05)


def _alive(pid: int) -> bool:
    """Running (a zombie waiting to be reaped counts as gone)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except FileNotFoundError:
        return False


def test_other_commands_and_a_missing_server_run_the_real_interpreter(scratch):
    with warm(scratch) as (env, count):
        other = sh("python -c 'import sys, os; print(sys.executable, "
                   "os.environ.get(\"PIPA_WARM_SOCKET\"))'", scratch, env)
        flagged = sh("python -u stages/probe.py x", scratch, env)  # a flag first: cold
        assert count() == 0
        gone = dict(env, PIPA_WARM_SOCKET=str(scratch / "no-server.sock"))
        cold = sh("python stages/probe.py y", scratch, gone)
    assert other.stdout.split() == [sys.executable, "None"], other.stderr
    assert "warm False" in flagged.stdout and "shim vars []" in flagged.stdout
    assert cold.returncode == 0 and "argv ['y']" in cold.stdout and "warm False" in cold.stdout


def test_a_preload_that_fails_or_kills_the_server_leaves_the_stages_as_cold_ones(scratch):
    with warm(scratch, preload=("fractions", "no_such_module_anywhere")) as (env, count):
        skipped = sh("python stages/probe.py a", scratch, env)
        assert count() == 1  # served, the missing module left to the stage
    assert skipped.returncode == 0 and "warm True" in skipped.stdout, skipped.stderr
    # a server that dies in its imports, after a shim has reached it: the shim runs cold
    (scratch / "scripts/boom.py").write_text("import os, time\ntime.sleep(2)\nos._exit(3)\n")
    with warm(scratch, preload=("fractions", "boom")) as (env, count):
        cold = sh("python stages/probe.py b", scratch, env)
        assert count() == 0
    assert cold.returncode == 0 and "argv ['b']" in cold.stdout, cold.stderr
    assert "warm False" in cold.stdout


def test_a_long_temporary_folder_still_gets_a_server(scratch, tmp_path, monkeypatch):
    long = tmp_path / ("t" * 90)  # a socket's path there would pass the ~107-byte limit
    long.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(long))
    with warm(scratch) as (env, count):
        ok = sh("python stages/probe.py a", scratch, env)
        assert count() == 1
    assert ok.returncode == 0 and "warm True" in ok.stdout, ok.stderr


def test_parallel_repro_starts_warm_only_for_plain_python_stages_on_the_cpu():
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from parallel_repro import warm_starts_apply
    finally:
        sys.path.pop(0)

    class Stage:
        def __init__(self, cmd):
            self.cmd = cmd

    cpu = {"launcher": "", "device": "cpu"}
    assert warm_starts_apply(cpu, [Stage(" python stages/align.py --model ds")])
    assert not warm_starts_apply(cpu, [Stage("echo hi > out.txt")])
    launched = {"launcher": "accelerate launch --no_python", "device": "cpu"}
    assert not warm_starts_apply(launched, [Stage("accelerate launch --no_python python "
                                                  "stages/align.py")])
    assert not warm_starts_apply({"launcher": "", "device": "cuda"},
                                 [Stage("python stages/align.py")])
