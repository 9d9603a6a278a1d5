#!/usr/bin/env bash
# Removes build outputs whose TypeScript source is gone (tsc -b never deletes them),
# so a moved or deleted test cannot keep running from packages/*/dist.
set -euo pipefail
cd "$(dirname "$0")/.."
find packages/*/dist/src packages/*/dist/test -name '*.js' 2>/dev/null | while IFS= read -r js; do
  pkg=${js%%/dist/*}
  rel=${js#*/dist/}
  src="$pkg/${rel%.js}.ts"
  if [ ! -f "$src" ]; then
    rm -f "$js" "$js.map" "${js%.js}.d.ts" "${js%.js}.d.ts.map"
  fi
done
find packages/*/dist/src packages/*/dist/test -type d -empty -delete 2>/dev/null || true
