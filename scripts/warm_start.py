"""Warm starts for the stages `scripts/parallel_repro.py` runs: each stage's process begins
with torch, transformers and the model code already imported.

Why: a stage of the default is short (a grid cell's median is 31 s on the AVX2 machine
type) and a cold one spends its first ~8.5 s of one core importing torch, transformers,
the two model families, peft, accelerate and dvclive (`python -X importtime`; README,
"Warm starts"). Over the main job's 97 stages that is about 7 minutes of wall time on two
cores, and a third of the micro pipeline the tests build.

How: parallel_repro starts one server (``serve``) that imports those packages once and
never computes anything. The `dvc repro` processes it runs find a ``python`` of ours first
on PATH (``shim``, in a private folder). DVC runs a stage's command (``python
stages/align.py ...``) through the shell, so it reaches the shim, which sends the server
its arguments, working folder, environment and its stdin/stdout/stderr (the descriptors
themselves, over a Unix socket). The server forks; the child takes those over, returns
from ``serve`` and runs the stage script as ``__main__``; the interpreter then exits as
any would (threads joined, atexit, exit status), and the shim exits with that status, or
dies by the same signal. Anything else that calls ``python`` (a script outside
``stages/``, a flag before the script), and a shim that finds no server (still importing,
or gone), runs the real interpreter with the same arguments (exec): the command then
behaves exactly as under plain `dvc repro`.

What stays the same: DVC sees the same command, dependencies, outputs, output and exit
status. The stage's environment is the one the shim had, less the shim's own variables
and folder. Only third-party packages are preloaded, in the environment ``stages/_boot.py``
gives every stage (its offline flags are read at import time); the repository's code
(``pipa``, ``_boot``, the stage script) is imported by each child from the files as they
are then. The server never runs a torch operation, so torch's thread pools start in the
child, after it sets its thread count (the OpenBLAS threads numpy starts at import have
fork handlers). A warm stage writes the bytes a cold one writes
(tests/test_pipeline_reruns.py compares a warm build with plain `dvc repro`). Two
differences a stage could see, none of ours does: ``sys.argv[0]`` is the script's absolute
path (runpy's), and objects still alive at exit are not finalized (no interpreter
teardown: a file left open and unflushed at exit loses its buffer; ours close theirs).

Death: a child runs in a process group of its own; when its shim goes away (killed, as a
`dvc repro` may be) the server kills that group, forked workers included, so nothing of a
killed stage goes on writing. When parallel_repro ends it stops the server, which kills
whatever still runs; a server killed outright takes its children with it (the kernel's
parent-death signal). Ctrl-C reaches the stages as SIGINT through the server, and a stage
that ends by it ends its shim the same way.

    python scripts/warm_start.py serve SOCKET [--preload json ...]   # parallel_repro does
    python -S scripts/warm_start.py shim ARGS...                     # the shim does
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import select
import shlex
import signal
import socket
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
STAGES = ROOT / "stages"
SOCKET_VAR = "PIPA_WARM_SOCKET"        # the server's address, for the shim
PYTHON_VAR = "PIPA_WARM_PYTHON"        # the interpreter the shim stands in for
SHIM_DIR_VAR = "PIPA_WARM_SHIM_DIR"    # the shim's folder, taken off PATH again
# What a cold stage spends its start-up importing; nothing of the repository.
PRELOAD = ("torch", "transformers", "transformers.models.auto.modeling_auto",
           "transformers.models.llama.modeling_llama", "transformers.models.qwen2.modeling_qwen2",
           "tokenizers", "safetensors.torch", "peft", "accelerate", "dvclive")


class _Stop(Exception):
    """SIGTERM to the server: kill what runs, remove the socket, exit."""


def serve(address: str, preload: tuple[str, ...] = PRELOAD) -> dict:
    """Listen on ``address``, then import ``preload``: a shim that connects meanwhile
    waits in the backlog (no longer than its own cold imports would take), so no stage
    starts cold because it came early. Returns only in a forked child, with its request:
    ``{"argv", "cwd", "env"}``, the requester's descriptors already on 0, 1 and 2."""
    import importlib

    def stop(signum, frame):
        raise _Stop

    def interrupt(signum, frame):  # Ctrl-C reaches the stages as it reaches cold ones
        for pid in running:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGINT)

    running: dict[int, socket.socket] = {}  # child pid -> its shim's connection
    signal.signal(signal.SIGINT, interrupt)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(address + ".part")
    listener.listen(64)
    os.replace(address + ".part", address)

    base_path = list(sys.path)
    sys.path.insert(0, str(STAGES))
    import _boot  # noqa: F401  the environment defaults a stage imports torch under

    for name in preload:
        try:
            importlib.import_module(name)
        except Exception as error:  # noqa: BLE001  each stage imports it, failing as a cold one
            print(f"warm_start: could not preload {name} ({type(error).__name__}: {error}); "
                  "the stages import it themselves", file=sys.stderr, flush=True)
    sys.path[:] = base_path
    del sys.modules["_boot"]  # each stage imports it again, in its own environment
    signal.signal(signal.SIGTERM, stop)  # (during the imports: the default, a quiet death)
    abandoned: set[int] = set()             # children whose shim went away: killed
    parent, me = os.getppid(), os.getpid()
    try:
        while os.getppid() == parent:  # parallel_repro gone: stop
            waiting = [c for pid, c in running.items() if pid not in abandoned]
            ready, _, _ = select.select([listener, *waiting], [], [], 0.1)
            for sock in ready:
                if sock is listener:
                    conn, _ = listener.accept()
                    request = _receive(conn)
                    if request is None:
                        conn.close()
                        continue
                    pid = os.fork()
                    if pid == 0:
                        return _become_stage(request, [listener, *running.values()],
                                             conn, base_path, me)
                    with contextlib.suppress(OSError):  # the child may have ended already
                        os.setpgid(pid, pid)  # also done by the child: whichever runs first
                    for fd in request["fds"]:  # the child's now; held here, a pipe never ends
                        os.close(fd)
                    running[pid] = conn
                    with contextlib.suppress(OSError):  # the shim now waits for the stage
                        conn.sendall(b'{"started": true}\n')
                    with open(address + ".served", "a") as served:  # parallel_repro counts
                        served.write(f"{request['argv'][0]}\n")
                else:  # readable before its status was sent: the shim is gone
                    pid = next(p for p, c in running.items() if c is sock)
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
                    abandoned.add(pid)
            while running:
                pid, status = os.waitpid(-1, os.WNOHANG)
                if pid == 0:
                    break
                conn = running.pop(pid)
                abandoned.discard(pid)
                answer = ({"signal": os.WTERMSIG(status)} if os.WIFSIGNALED(status)
                          else {"exit": os.waitstatus_to_exitcode(status)})
                with contextlib.suppress(OSError):
                    conn.sendall(json.dumps(answer).encode() + b"\n")
                conn.close()
    except _Stop:
        pass
    finally:
        if os.getpid() == me:  # not in a child returning with its request
            for pid in running:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(FileNotFoundError):
                os.unlink(address)
    sys.exit(0)


def _receive(conn: socket.socket) -> dict | None:
    """A shim's request: one JSON line, the three descriptors with its first bytes."""
    fds: list[int] = []
    conn.settimeout(10)  # a shim stopped mid-request must not stall the others
    try:
        data, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
        while not data.endswith(b"\n"):
            more = conn.recv(1 << 16)
            if not more:
                break
            data += more
        if len(fds) == 3 and data.endswith(b"\n"):
            conn.settimeout(None)
            return {**json.loads(data), "fds": fds}
    except (OSError, ValueError):  # a shim that died mid-request, or not a shim
        pass
    for fd in fds:
        os.close(fd)
    return None


def _become_stage(request: dict, server_files: list, conn: socket.socket,
                  base_path: list[str], server: int) -> dict:
    """In the forked child: leave the server's files and signals, take the shim's
    descriptors, folder, environment and arguments. Killed with the server (SIGKILL
    included: a group of its own would otherwise outlive it)."""
    os.setpgid(0, 0)
    _die_with_parent()
    if os.getppid() != server:  # the server died before prctl
        os._exit(1)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    for f in [*server_files, conn]:
        f.close()
    for target, fd in enumerate(request.pop("fds")):
        os.dup2(fd, target)
        os.close(fd)
    unbuffered = bool(request["env"].get("PYTHONUNBUFFERED"))
    sys.stdin, sys.stdout, sys.stderr = (_text_stream(fd, unbuffered) for fd in (0, 1, 2))
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    script = os.path.abspath(request["argv"][0])
    sys.argv = list(request["argv"])
    sys.path[:] = [os.path.dirname(script), *base_path[1:]]
    return request


def _die_with_parent() -> None:
    """SIGKILL when the parent dies (Linux's PR_SET_PDEATHSIG; elsewhere nothing)."""
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG


def _text_stream(fd: int, unbuffered: bool) -> io.TextIOWrapper:
    """The text stream a cold interpreter puts on ``fd`` (0, 1 or 2): the server's own
    encoding and error handler (its interpreter read the same locale), stderr's errors
    escaped, stderr and terminals line-buffered, ``PYTHONUNBUFFERED`` writing through."""
    raw = io.FileIO(fd, "r" if fd == 0 else "w", closefd=False)
    like = sys.__stdin__ if fd == 0 else sys.__stdout__
    encoding = getattr(like, "encoding", None)
    errors = "backslashreplace" if fd == 2 else getattr(like, "errors", None)
    if fd == 0:
        return io.TextIOWrapper(io.BufferedReader(raw), encoding=encoding, errors=errors)
    binary = raw if unbuffered else io.BufferedWriter(raw)
    return io.TextIOWrapper(binary, encoding=encoding, errors=errors,
                            line_buffering=fd == 2 or raw.isatty(), write_through=unbuffered)


def is_stage_command(args: list[str]) -> bool:
    """``python stages/<script>.py ...`` of this repository (no interpreter flags)."""
    return bool(args) and args[0].endswith(".py") and \
        Path(args[0]).resolve().parent == STAGES.resolve()


def shim(args: list[str]) -> None:
    """``python ARGS`` where parallel_repro put the shim first on PATH: a stage command
    runs in a child of the server, anything else in the real interpreter."""
    env = dict(os.environ)
    real, address = env.pop(PYTHON_VAR), env.pop(SOCKET_VAR, "")
    shim_dir = env.pop(SHIM_DIR_VAR, "")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep)
                                  if p != shim_dir)
    if is_stage_command(args):
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            server.connect(address)
        except OSError:  # not listening yet, or gone: a cold start
            server.close()
        else:
            request = {"argv": args, "cwd": os.getcwd(), "env": env}
            # Ctrl-C: the server passes it to the stage, whose end is then this one's
            ctrl_c = signal.signal(signal.SIGINT, signal.SIG_IGN)
            replies = server.makefile("rb")
            try:
                socket.send_fds(server, [json.dumps(request).encode() + b"\n"], [0, 1, 2])
                started = replies.readline()  # the server forked the stage
            except OSError:
                started = b""
            if started:
                answer = replies.readline()  # when the stage has ended
                if not answer:
                    sys.exit("error: the warm-start server (scripts/warm_start.py) ended "
                             f"before the stage {args[0]} did; run it again")
                status = json.loads(answer)
                if "signal" in status:
                    signal.signal(status["signal"], signal.SIG_DFL)
                    os.kill(os.getpid(), status["signal"])
                os._exit(status["exit"])
            # the server ended before it forked the stage (its imports failed): cold
            signal.signal(signal.SIGINT, ctrl_c)
            server.close()
    os.execve(real, [real, *args], env)


@contextlib.contextmanager
def warm_starts(python: str, preload: tuple[str, ...] = PRELOAD):
    """For one run of `dvc repro` processes: start the server (with ``python``, the
    interpreter the stage commands would get; importing ``preload``) and write the shim. Yields the environment
    those processes need (the shim first on PATH) and a function that counts the warm
    starts so far. The server is stopped, and the folder removed, on the way out."""
    import subprocess
    import tempfile

    # A Unix socket's path has at most ~107 bytes: a long TMPDIR falls back to /tmp.
    short = None if len(tempfile.gettempdir()) < 60 else "/tmp"
    with tempfile.TemporaryDirectory(prefix="pipa-warm-", dir=short) as folder:
        address, shim_dir = f"{folder}/server.sock", Path(folder) / "bin"
        shim_dir.mkdir()
        (shim_dir / "python").write_text(
            f"#!/bin/sh\nexec {shlex.quote(python)} -S {shlex.quote(str(Path(__file__).resolve()))}"
            ' shim "$@"\n')
        (shim_dir / "python").chmod(0o755)
        server = subprocess.Popen([python, str(Path(__file__).resolve()), "serve", address,
                                   "--preload", *preload], stdin=subprocess.DEVNULL)
        env = {SOCKET_VAR: address, PYTHON_VAR: python, SHIM_DIR_VAR: str(shim_dir),
               "PATH": f"{shim_dir}{os.pathsep}{os.environ.get('PATH', '')}"}

        def count() -> int:
            with contextlib.suppress(FileNotFoundError):
                return len(Path(address + ".served").read_text().splitlines())
            return 0

        try:
            yield env, count
        finally:
            server.terminate()
            try:
                server.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.kill()
                server.wait()


def run_stage() -> None:
    """The stage script (``sys.argv[0]``) as this process's main, then the exit a cold
    interpreter makes: the same status, message or traceback (from the script's own frame
    on), threads joined, atexit handlers run, streams flushed. What it skips is tearing the
    preloaded modules down: in a forked child that touches, and so copies, every page it
    shares with the server (2.2 s per stage, measured; a cold exit takes 0.5)."""
    import atexit
    import runpy
    import threading

    script = os.path.abspath(sys.argv[0])
    interrupted = False
    try:
        runpy.run_path(script, run_name="__main__")  # absolute, as a cold __main__ is
        code = 0
    except SystemExit as stop:
        code = stop.code if isinstance(stop.code, int) else 0 if stop.code is None else 1
        if not isinstance(stop.code, int | None):
            print(stop.code, file=sys.stderr)
    except BaseException as error:  # noqa: BLE001  uncaught in the stage: reported as a cold
        tb = error.__traceback__       # interpreter reports it, status 1 (or SIGINT)
        interrupted = isinstance(error, KeyboardInterrupt)
        while tb is not None and tb.tb_frame.f_code.co_filename != script:
            tb = tb.tb_next  # this file's and runpy's frames: not the stage's
        if tb is not None:
            error.with_traceback(tb)  # what the hook prints, whatever tb it is handed
        sys.excepthook(type(error), error, error.__traceback__)
        code = 1
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(OSError, ValueError):
            stream.flush()
    if interrupted:  # a cold interpreter ends an uncaught KeyboardInterrupt by SIGINT
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code)


def main(argv: list[str]) -> None:
    if argv[:1] == ["shim"]:
        shim(argv[1:])
    elif argv[:1] == ["serve"] and len(argv) >= 2:
        preload = tuple(argv[3:]) if argv[2:3] == ["--preload"] else PRELOAD
        serve(argv[1], preload)
        run_stage()  # only a forked child gets here
    else:
        sys.exit("usage: warm_start.py serve SOCKET [--preload MODULE ...] | shim ARGS...")


if __name__ == "__main__":
    main(sys.argv[1:])
