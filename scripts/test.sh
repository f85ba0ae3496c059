#!/usr/bin/env bash
# The tests: set up .venv (first run only), lint, then pytest (unit + micro-pipeline
# integration tests; `slow` ones - a real pretrained LM, whole-file grader runs - are opt-in:
# scripts/test.sh -m slow). Extra arguments go to pytest instead of the default's.
source "$(dirname "${BASH_SOURCE[0]}")/env.sh"
ruff check .
# No arguments: the default run, one pytest-xdist worker per core, each test file on one
# worker (--dist loadfile). The micro pipeline is built once per run, by the first worker
# that asks (tests/micro_pipeline.py); the other runs the unit tests meanwhile, then the
# second pipeline file's tests beside the first's (tests/conftest.py orders the files).
if [ "$#" -eq 0 ]; then set -- -m "not slow" -n auto --dist loadfile; fi
python -m pytest -q -p no:cacheprovider "$@"
