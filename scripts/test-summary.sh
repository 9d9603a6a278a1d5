#!/usr/bin/env bash
# test-summary.sh SKIP_LOG — the end of `make test`: the suites skipped because a system
# package is missing (recorded by packages/testkit/src/system.ts), grouped by package,
# with the command that installs it. Prints nothing else when nothing was skipped.
set -euo pipefail
log=${1:?usage: test-summary.sh SKIP_LOG}
[ -s "$log" ] || { echo "make test: nothing skipped for a missing system package"; exit 0; }
echo
echo "make test: skipped for missing system packages:"
if [ "$(id -u)" = 0 ]; then how="apt-get install -y"; tail=""; else how="sudo apt-get install -y"; tail=", or run make test as root"; fi
cut -f1 "$log" | sort -u | while read -r pkg; do
  echo "  $pkg  (install: $how $pkg$tail)"
  awk -F'\t' -v p="$pkg" '$1 == p { print "    - " $2 }' "$log" | sort -u
done
