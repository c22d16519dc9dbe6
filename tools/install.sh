#!/usr/bin/env bash
# Creates a Python >= 3.12 venv and installs the package into it.
#   bash tools/install.sh            -> .venv with the core install
#   bash tools/install.sh test       -> .venv with the test extras (torch CPU use, transformers, pytest)
#   VENV=/tmp/v bash tools/install.sh test
set -euo pipefail
cd "$(dirname "$0")/.."
# The demo's speech synthesiser (omnidiff_jax/demo/speech.py): espeak-ng when root and apt-get exist; never fails
# the install (without it the demo uses its own fallback synthesiser and says so in corpus.json).
if ! command -v espeak-ng >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  { apt-get install -y -q espeak-ng >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q espeak-ng >/dev/null 2>&1; }; } \
    && echo "install.sh: installed espeak-ng" || echo "install.sh: espeak-ng not installed (the demo falls back to its own synthesiser)"
fi
venv="${VENV:-.venv}"
extras="${1:-}"
py=""
if command -v pyenv >/dev/null 2>&1; then
  for v in $(pyenv versions --bare 2>/dev/null | grep -E '^3\.(1[2-9])(\.[0-9]+)?$' | sort -V); do
    py="$(pyenv root)/versions/$v/bin/python"; break
  done
fi
if [ -z "$py" ]; then
  for cand in python3.12 python3.13 python3; do
    if command -v "$cand" >/dev/null 2>&1 && "$cand" -c 'import sys; sys.exit(sys.version_info < (3, 12))'; then
      py="$cand"; break
    fi
  done
fi
[ -n "$py" ] || { echo "install.sh: no Python >= 3.12 found (pyenv or python3.12 on PATH)" >&2; exit 1; }
echo "install.sh: using $("$py" --version) from $py -> $venv"
[ -x "$venv/bin/python" ] || "$py" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
if [ -n "$extras" ]; then spec=".[$extras]"; else spec="."; fi
"$venv/bin/python" -m pip install -q -e "$spec"
