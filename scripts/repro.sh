#!/usr/bin/env bash
# The main job: set up .venv (first run only), then reproduce the whole study with DVC.
# Extra arguments go to `dvc repro` (e.g. a stage name: scripts/repro.sh align_paired_step).
# Per-stage wall times are printed at the end and kept in runs/timing.json.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
dvc repro "$@" 2>&1 | python -u scripts/stage_times.py runs/timing.json
