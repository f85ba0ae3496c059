#!/usr/bin/env bash
# The main job: set up .venv (first run only), then reproduce the whole study with DVC.
# Extra arguments go to `dvc repro` (e.g. a stage name: scripts/repro.sh align_paired_step).
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
start=$(date +%s)
dvc repro "$@"
echo "[repro] done in $(( $(date +%s) - start )) s"
