# Sourced by repro.sh and test.sh: create .venv and install the pinned stack, once.
# Re-installs only when pyproject.toml or constraints.txt change (a stamp holds their hash).
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PY="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  echo "[setup] creating .venv with $($PY --version)"
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
source .venv/bin/activate
stamp=".venv/.pipa-installed"
want="$(cat pyproject.toml constraints.txt | sha256sum | cut -c1-16)"
if [ "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]; then
  echo "[setup] installing the pinned stack (torch 2.13.0 CPU build first, then the rest)"
  python -m pip install -q --upgrade pip
  # torch first and alone, pinned: any looser request pulls a multi-GB CUDA build.
  python -m pip install -q -c constraints.txt torch==2.13.0
  python -m pip install -q -c constraints.txt -e ".[test]"
  echo "$want" > "$stamp"
fi
# Offline by construction: hub clients fail fast, DVC sends no analytics.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1
export HF_HUB_DISABLE_TELEMETRY=1 DVC_NO_ANALYTICS=1 TOKENIZERS_PARALLELISM=false
export OMP_WAIT_POLICY=PASSIVE
