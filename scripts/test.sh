#!/usr/bin/env bash
# videoq's test command (the README's, and CI's through .ci/run): installs what the
# tests need, then runs the linters, the type checker and every test.
#
# - Debian's chromium and chromium-driver, for the Flower browser test, when missing
#   (this needs root, as on the project's machines; otherwise it says what to install);
# - a virtualenv in .venv with videoq and its test tools;
# - ruff (lint, then the format check), mypy, the fast mutation check
#   (scripts/mutants.py --fast: each guard the catalogue removes from worker/producers
#   must make its unit tests fail) and pytest (extra pytest arguments pass through:
#   scripts/test.sh -x -k gateway).
set -euo pipefail
cd "$(dirname "$0")/.."
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing chromium and chromium-driver (the Flower browser test needs them)" >&2
    (apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      apt-get install -y -qq chromium chromium-driver) >&2
  else
    echo "error: the Flower browser test needs chromium and chromedriver on PATH;" \
      "install Debian's chromium and chromium-driver (as root: apt-get install chromium" \
      "chromium-driver)" >&2
    exit 1
  fi
fi
command -v redis-server >/dev/null ||
  echo "note: redis-server not on PATH; tests use VIDEOQ_TEST_REDIS_URL or 127.0.0.1:6379" >&2
python3 -m venv .venv
. .venv/bin/activate
pip install -q -e '.[test]'
ruff check .
ruff format --check .
mypy
python scripts/mutants.py --fast
pytest "$@"
