#!/usr/bin/env bash
# The main job: set up .venv (first run only), then reproduce the whole study with DVC,
# several `dvc repro` processes at a time (scripts/parallel_repro.py: one per free core by
# default, one on a GPU; same stages, same numbers as plain `dvc repro`, which stays the
# way to run with any other DVC option).
# Arguments go to scripts/parallel_repro.py: stage names, --force, --single-item, --jobs N,
# --dry, --cold.
# Per-stage wall times are printed at the end and kept in runs/timing.json.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
python -u scripts/parallel_repro.py "$@"
