#!/usr/bin/env bash
# The main job from a fresh machine: set-up, then `tks-train` on the built-in data
# (scikit-learn's digits). Extra arguments go to tks-train.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${TKS_VENV:-$ROOT/.venv}"
bash "$ROOT/scripts/setup_env.sh"
cd "$ROOT"
"$VENV/bin/tks-train" "$@"
