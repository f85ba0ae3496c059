#!/usr/bin/env bash
# The tests: set up .venv (first run only), lint, then pytest (unit + micro-pipeline
# integration tests; `slow` ones - a real pretrained LM, whole-file grader runs - are opt-in:
# scripts/test.sh -m slow). Extra arguments go to pytest.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
ruff check .
if [ "$#" -eq 0 ]; then set -- -m "not slow"; fi
python -m pytest -q -p no:cacheprovider "$@"
