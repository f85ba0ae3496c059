"""CI's table comparison: rows keyed by every label column, differences reported."""

from __future__ import annotations

import pandas as pd

from pipa.compare import main


def _write(folder, rows):
    folder.mkdir()
    pd.DataFrame(rows).to_csv(folder / "table3.csv", index=False)


ROWS = [  # two rows share data/labels/algorithm/model/benchmark and differ only by role
    {"table": 3, "role": "baseline", "algorithm": "pipa_m", "prior": "sft", "data": "unpaired",
     "labels": "step", "model": "ds", "benchmark": "math", "mean": 32.9, "std": 0.4},
    {"table": 3, "role": "ablation", "algorithm": "pipa_m", "prior": "all", "data": "unpaired",
     "labels": "step", "model": "ds", "benchmark": "math", "mean": 33.7, "std": 0.9},
]


def test_identical_tables_reproduce(tmp_path, capsys):
    _write(tmp_path / "a", ROWS)
    _write(tmp_path / "b", ROWS)
    assert main([str(tmp_path / "a"), str(tmp_path / "b")]) == 0
    assert "tables reproduce" in capsys.readouterr().out


def test_moved_cell_is_reported(tmp_path, capsys):
    _write(tmp_path / "a", ROWS)
    moved = [dict(ROWS[0]), dict(ROWS[1], mean=35.0)]
    _write(tmp_path / "b", moved)
    assert main([str(tmp_path / "a"), str(tmp_path / "b"), "--tolerance", "0.5"]) == 1
    out = capsys.readouterr().out
    assert "mean committed 33.7 -> new 35.0" in out
