#!/usr/bin/env bash
# The layout rules of docs/architecture.md, run by `make test`:
#   - imports point one way between packages, only through public entry points,
#     no cycles, no module unreachable from an entry point (dependency-cruiser,
#     rules in .dependency-cruiser.cjs);
#   - no TypeScript source file over 800 lines (tests aside).
set -euo pipefail
cd "$(dirname "$0")/.."
MAX_LINES=800

npx depcruise packages --config .dependency-cruiser.cjs --output-type err

long=$(find packages -path '*/node_modules' -prune -o -path '*/dist' -prune -o -path '*/test' -prune \
         -o -name '*.ts' ! -name '*.d.ts' -print0 | xargs -0 wc -l | awk -v max="$MAX_LINES" '$2 != "total" && $1 > max')
if [ -n "$long" ]; then
  echo "TypeScript sources over $MAX_LINES lines (split them by concern):" >&2
  echo "$long" >&2
  exit 1
fi
echo "layout: no source file over $MAX_LINES lines"
