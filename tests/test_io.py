"""pipa/io.py's whole-or-nothing writes, and what a stage's start removes (stages/_boot.py)."""

from __future__ import annotations

import importlib
import os
import re
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from pipa.io import atomic_path, remove_stale_temporaries, stale_temporaries

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def boot(monkeypatch):
    """stages/_boot.py, imported as the stage scripts import it."""
    monkeypatch.syspath_prepend(str(ROOT / "stages"))
    for key in ("RANK", "OMPI_COMM_WORLD_RANK", "MV2_COMM_WORLD_RANK", "PMI_RANK"):
        monkeypatch.delenv(key, raising=False)
    environ = dict(os.environ)
    module = importlib.import_module("_boot")
    os.environ.clear()  # its import sets the stages' offline flags: not for other tests
    os.environ.update(environ)
    return module


def _killed_write(final: Path) -> None:
    """A process that dies by SIGKILL inside ``atomic_path(final)``, as a killed stage does."""
    code = ("import os, signal, sys\nfrom pipa.io import atomic_path\n"
            "with atomic_path(sys.argv[1]) as tmp:\n"
            "    tmp.mkdir()\n    (tmp / 'half.bin').write_bytes(b'half')\n"
            "    os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code, str(final)], cwd=ROOT, check=False,
                          env=dict(os.environ, PYTHONPATH=str(ROOT)))
    assert proc.returncode == -signal.SIGKILL


def test_a_killed_write_leaves_its_temporary_and_publishes_nothing(tmp_path):
    final = tmp_path / "models" / "sft" / "ds"
    _killed_write(final)
    assert not final.exists()
    left = stale_temporaries(final)
    assert len(left) == 1 and (left[0] / "ds" / "half.bin").exists()


def test_stale_temporaries_are_exactly_those_of_the_output(tmp_path):
    final = tmp_path / "ds"
    mine = Path(tempfile.mkdtemp(prefix=".tmp-ds-", dir=tmp_path))  # what atomic_path makes
    file_tmp = tmp_path / ".tmp-ds-abcd_123"                         # a file, same pattern
    file_tmp.write_text("")
    keep = [tmp_path / n for n in (
        ".tmp-ds-big-abcd1234",   # the temporary of another output, ds-big
        ".tmp-dsx-abcd1234", ".tmp-ds-abc", ".tmp-ds.json-abcd1234", "ds-old", ".tmp-qw-abcd1234")]
    for path in keep:
        path.mkdir()
    assert stale_temporaries(final) == sorted([mine, file_tmp])
    assert remove_stale_temporaries(final, tmp_path / "missing" / "out") == sorted([mine, file_tmp])
    assert not mine.exists() and not file_tmp.exists()
    assert all(path.exists() for path in keep)
    assert stale_temporaries(tmp_path / "nowhere" / "ds") == []
    # atomic_path removes the same set when it writes, and nothing else
    Path(tempfile.mkdtemp(prefix=".tmp-ds-", dir=tmp_path))
    with atomic_path(final) as tmp:
        tmp.write_text("done")
    assert final.read_text() == "done" and stale_temporaries(final) == []
    assert all(path.exists() for path in keep)


def test_stage_start_removes_what_a_killed_run_left(tmp_path, boot, monkeypatch, capsys):
    """``_boot.outputs`` at a stage's start: the killed run's temporaries of the declared
    outputs go, before the stage writes anything; another output's stay."""
    out, stats = tmp_path / "data" / "labels" / "a.jsonl", tmp_path / "data" / "labels" / "s.json"
    other = tmp_path / "data" / "labels" / "b.jsonl"
    for final in (out, stats, other):
        _killed_write(final)
    # under a launcher the processes of rank > 0 leave everything to rank 0
    monkeypatch.setenv("RANK", "1")
    boot.outputs(out, stats)
    assert stale_temporaries(out) and stale_temporaries(stats)
    monkeypatch.setenv("RANK", "0")
    boot.outputs(out, None, stats)  # None: an optional output not asked for
    assert stale_temporaries(out) == [] and stale_temporaries(stats) == []
    assert len(stale_temporaries(other)) == 1
    assert "the temporary of a run that was killed" in capsys.readouterr().out


def test_every_stage_script_removes_its_stale_temporaries_at_start():
    for script in sorted((ROOT / "stages").glob("*.py")):
        if script.name == "_boot.py":
            continue
        text = script.read_text()
        assert re.search(r"_boot\.outputs\(|remove_stale_temporaries\(", text), script.name


def test_launcher_must_be_a_string_and_accelerate_needs_no_python(boot):
    assert boot.launcher_problem("") is None
    assert boot.launcher_problem("accelerate launch --no_python --config_file c.yaml") is None
    assert boot.launcher_problem("env A=1 torchrun --nproc-per-node 2 --no-python") is None
    assert boot.launcher_problem("nice -n 5") is None
    assert "expected a string" in boot.launcher_problem(None)
    assert "expected a string" in boot.launcher_problem(["accelerate", "launch"])
    assert "add --no_python" in boot.launcher_problem("accelerate launch --config_file c.yaml")
    assert "add --no_python" in boot.launcher_problem("A=1 /opt/bin/torchrun --nproc-per-node 2")


# --------------------------------------------------------------------------------------
# bad input files: every bad row at once, one clean message, nothing written
# (issue #17's catalogue continues in tests/test_alphamath.py and tests/test_config.py)
# --------------------------------------------------------------------------------------

BAD_JSONL = [
    # (file content, what the one error must say)
    ('{"a": 1}\n{"a": 2\nnot json\n[1, 2]\n{"a": 3}\n',
     [":2: not valid JSON", ":3: not valid JSON", ":4: a JSON list, not an object",
      "3 bad lines of 5"]),
    ('{"a": 1\n', [":1: not valid JSON", "fix or delete that line"]),
]


@pytest.mark.parametrize("content, expected", BAD_JSONL)
def test_read_jsonl_reports_every_bad_line_at_once(tmp_path, content, expected):
    from pipa.io import DataError, read_jsonl

    path = tmp_path / "rows.jsonl"
    path.write_text(content)
    with pytest.raises(DataError) as err:
        read_jsonl(path)
    for text in expected:
        assert text in str(err.value)
    assert str(path) in str(err.value)


def test_read_jsonl_caps_the_list_and_refuses_non_utf8(tmp_path):
    from pipa.io import MAX_LISTED, DataError, read_jsonl

    path = tmp_path / "many.jsonl"
    path.write_text("x\n" * (MAX_LISTED + 5))
    with pytest.raises(DataError, match=r"\.\.\. and 5 more") as err:
        read_jsonl(path)
    assert str(err.value).count("not valid JSON") == MAX_LISTED
    latin = tmp_path / "latin1.jsonl"
    latin.write_bytes('{"q": "caf\xe9"}\n'.encode("latin-1"))
    with pytest.raises(DataError, match="not UTF-8"):
        read_jsonl(latin)


def test_a_stage_on_bad_data_prints_one_error_and_writes_nothing(tmp_path):
    """The labels stage on an AlphaMath file with three bad rows: exit 1, one `error:`
    message naming the file and every bad row, no traceback, no output written."""
    import json

    rows = [{"instruction": "<question>1+1?</question>", "input": "",
             "output": json.dumps([{"step": "Answer: 2\n", "P": 1, "Q": 1, "depth": 1}])},
            {"instruction": "<question>2+2?</question>"}, 7,
            {"instruction": "", "input": "", "output": "[]"}]
    source = tmp_path / "train.json"
    source.write_text(json.dumps(rows))
    out, stats = tmp_path / "out.jsonl", tmp_path / "stats.json"
    proc = subprocess.run(
        [sys.executable, "stages/labels.py", "--data", "paired", "--labels", "answer",
         "--source", str(source), "--out", str(out), "--stats", str(stats)],
        cwd=ROOT, capture_output=True, text=True, check=False)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr, proc.stderr
    assert proc.stderr.startswith(f"error: {source}: 3 bad rows of 4"), proc.stderr
    for row in ("row 1", "row 2", "row 3"):
        assert row in proc.stderr
    assert not out.exists() and not stats.exists()
