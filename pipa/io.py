"""Whole-or-nothing writes, so DVC never caches a half-written artifact."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def atomic_path(final: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary sibling path; rename it onto ``final`` only if the block succeeds.

    Works for files and directories. The temporary lives in the same folder so the rename
    is atomic on POSIX; on failure (exception or SIGKILL) ``final`` is left untouched and
    the temporary is removed (or, after SIGKILL, left under a ``.tmp-`` name DVC ignores
    because it is not a declared output).
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    # A run killed earlier (SIGKILL skips the cleanup below) leaves its temporary behind;
    # a stage is the only writer of its outputs, so its stale temporaries can go.
    remove_stale_temporaries(final)
    tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{final.name}-", dir=final.parent))
    target = tmp / final.name
    try:
        yield target
        if final.is_dir() and not final.is_symlink():
            shutil.rmtree(final)
        elif final.exists() or final.is_symlink():
            final.unlink()
        os.replace(target, final)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def stale_temporaries(final: str | os.PathLike) -> list[Path]:
    """The temporaries ``atomic_path(final)`` left beside ``final`` (a killed run): exactly
    ``.tmp-<name>-`` plus ``mkdtemp``'s 8 random characters, so never the temporary of
    another output whose name starts with ``<name>-`` (``ds`` and ``ds-big``)."""
    final = Path(final)
    if not final.parent.is_dir():
        return []
    pattern = re.compile(rf"\.tmp-{re.escape(final.name)}-[a-z0-9_]{{8}}")
    return sorted(p for p in final.parent.iterdir() if pattern.fullmatch(p.name))


def remove_stale_temporaries(*finals: str | os.PathLike) -> list[Path]:
    """Remove ``stale_temporaries`` of each of ``finals`` (folders or files); return them.

    Every stage calls it at its start with its declared outputs (``stages/_boot.py``): a
    stage killed mid-run (SIGKILL, a lost machine) leaves its ``.tmp-<output>-*``
    temporary beside the output, where it would litter the folder, or change the hash of
    a folder another stage depends on (``models/sft``, ``data/prior/sft``)."""
    removed = []
    for final in finals:
        for stale in stale_temporaries(final):
            if stale.is_dir() and not stale.is_symlink():
                shutil.rmtree(stale, ignore_errors=True)
            else:
                stale.unlink(missing_ok=True)
            removed.append(stale)
    return removed


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n")


def write_jsonl(path: str | os.PathLike, rows: Iterable[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w") as fh:
        fh.writelines(json.dumps(row, sort_keys=True) + "\n" for row in rows)


class DataError(ValueError):
    """A bad input file: the message names the file, the row or line, what is wrong and the
    fix, every bad row of the file at once (up to ``MAX_LISTED``). The stages print it as one
    ``error:`` message and exit non-zero, writing nothing (``stages/_boot.py``)."""


#: Most bad rows one error lists (the rest are counted).
MAX_LISTED = 20


def listed(path: str | os.PathLike, problems: list[str], total: int, unit: str = "lines") -> str:
    """One message for every bad row of a file: a count, then one line per row."""
    shown = "\n  - ".join(problems[:MAX_LISTED])
    more = (f"\n  ... and {len(problems) - MAX_LISTED} more"
            if len(problems) > MAX_LISTED else "")
    return f"{path}: {len(problems)} bad {unit} of {total}:\n  - {shown}{more}"


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read a JSONL file of objects. Every malformed line is reported, in one ``DataError``
    naming the file, each line and the fix; a file that is not UTF-8 is refused whole."""
    rows, problems, n_lines = [], [], 0
    try:
        with open(path, encoding="utf-8") as fh:
            lines = fh.readlines()
    except UnicodeDecodeError as err:
        raise DataError(f"{path}: not UTF-8 text (byte {err.start}); JSONL files are UTF-8: "
                        "re-export it as UTF-8") from None
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        n_lines += 1
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            problems.append(f"{path}:{lineno}: not valid JSON ({err.msg}); fix or delete "
                            "that line")
            continue
        if not isinstance(row, dict):
            problems.append(f"{path}:{lineno}: a JSON {type(row).__name__}, not an object; "
                            "each line holds one record {...}")
            continue
        rows.append(row)
    if len(problems) == 1:
        raise DataError(problems[0])
    if problems:
        raise DataError(listed(path, problems, n_lines))
    return rows
