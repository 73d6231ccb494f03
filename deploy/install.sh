#!/usr/bin/env bash
# Install ckptd into a virtualenv. Used by the Makefile (make demo / make test) and the Dockerfile,
# so CI exercises the same steps the container image runs.
#   deploy/install.sh VENV [EXTRAS]
#   TORCH_SPEC       torch requirement, default torch==2.13.0 (CPU build; on the dev machines it is on disk)
#   TORCH_INDEX_URL  optional index for torch (e.g. https://download.pytorch.org/whl/cpu or .../cu126)
set -euo pipefail
venv=${1:?usage: install.sh VENV [EXTRAS]}
extras=${2:-}
python=${PYTHON:-python3.11}
here=$(cd "$(dirname "$0")/.." && pwd)

[ -x "$venv/bin/python" ] || "$python" -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
# torch first, pinned: the package's own range then keeps it instead of pulling a multi-GB CUDA build.
"$venv/bin/python" -m pip install -q ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"} "${TORCH_SPEC:-torch==2.13.0}"
if [ -n "$extras" ]; then
  "$venv/bin/python" -m pip install -q -e "$here[$extras]"
else
  "$venv/bin/python" -m pip install -q "$here"
fi
