#!/usr/bin/env bash
# Boot N QEMU guests ("hosts") sharing one CXL type-3 memory device (or an nvdimm) and run tests in
# them; see `qemu/cxl-mhd.sh --help` and docs/harness.md.  The work is done by the Python package
# mhd (declared in pyproject.toml, installed into the project's venv by `make venv`); exec keeps
# signals (Ctrl-C) going straight to it, and it stops every QEMU it started and removes its
# temporary files on any exit.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
PY="$ROOT/.venv/bin/python"
if [[ ! -x "$PY" ]]; then
    echo "cxl-mhd.sh: error: no venv at $ROOT/.venv (run \`make venv\` or scripts/setup.sh --venv-only)" >&2
    exit 3
fi
exec "$PY" -m mhd "$@"
