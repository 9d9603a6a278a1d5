#!/usr/bin/env bash
# setup.sh — the Debian/Ubuntu packages Shoal needs, installed when this machine lets us.
# `make demo`, `make test` and .ci/run call it first; it is quick when nothing is missing.
#
# Usage: scripts/setup.sh [--for demo|test|ci]
#   demo  the build tools only (a C++ compiler, CMake, make, Python for node-gyp)
#   test  (default) also mosquitto and Chromium, and the aarch64/deploy tools when it can
#   ci    like test, but every package is required (CI runs as root)
#
# Installs with apt-get when it runs as root or has passwordless sudo. Where it cannot,
# the build tools are an error (nothing builds without them); for a test package it
# prints one line per package saying which suites skip and the command that installs
# it, and the tests skip those suites (packages/testkit/src/system.ts), listing them
# again in the summary at the end of `make test`.
#
# Environment:
#   SHOAL_NO_INSTALL=1                  never install; report only
#   SHOAL_WITHOUT="mosquitto chromium"  treat these packages as absent (the tests do too):
#                                       checks the no-install path on a machine that has them
set -euo pipefail

PURPOSE="test"
while [ $# -gt 0 ]; do
  case $1 in
    --for) PURPOSE=${2:-}; shift 2 ;;
    --for=*) PURPOSE=${1#--for=}; shift ;;
    -h|--help) sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) echo "setup: unknown argument '$1' (use --for demo|test|ci)" >&2; exit 2 ;;
  esac
done
case $PURPOSE in demo|test|ci) ;; *) echo "setup: --for must be demo, test or ci (got '$PURPOSE')" >&2; exit 2 ;; esac

BUILD=(cmake g++ make python3)
# package -> the suites that need it (the line printed when it is missing)
declare -A TEST_PKGS=(
  [mosquitto]="the mosquitto (MQTT 5) runs of the broker, controller, device and fleet tests; their aedes runs still run"
  [chromium]="the dashboard browser tests (layout, screenshots, live updates)"
)
TEST_ORDER=(mosquitto chromium)
# make test-arm (aarch64 cross build under qemu), make check-deploy, and mosquitto_sub/pub
# for poking at a broker by hand; none of them is part of make test
OTHER=(g++-aarch64-linux-gnu qemu-user shellcheck systemd mosquitto-clients)

declare -A WITHOUT=()
without_list=${SHOAL_WITHOUT:-}
for p in ${without_list//,/ }; do WITHOUT[$p]=1; done

installed() {
  local p=$1
  [ -n "${WITHOUT[$p]:-}" ] && return 1
  # the command of the same name counts too (a tool built from source, a non-Debian system)
  command -v "$p" >/dev/null 2>&1 && return 0
  [ "$p" = mosquitto ] && [ -x /usr/sbin/mosquitto ] && return 0 # /usr/sbin is often not on a user's PATH
  command -v dpkg-query >/dev/null 2>&1 &&
    [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" = installed ]
}

SUDO=
can_install=0
if [ "${SHOAL_NO_INSTALL:-0}" != 1 ] && command -v apt-get >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ]; then can_install=1
  elif command -v sudo >/dev/null 2>&1 && sudo -n true >/dev/null 2>&1; then SUDO="sudo -n"; can_install=1
  fi
fi

wanted=("${BUILD[@]}")
if [ "$PURPOSE" != demo ]; then wanted+=("${TEST_ORDER[@]}" "${OTHER[@]}"); fi
missing=()
for p in "${wanted[@]}"; do
  [ -n "${WITHOUT[$p]:-}" ] && continue # SHOAL_WITHOUT: absent on purpose, never installed
  installed "$p" || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ] && [ "$can_install" = 1 ]; then
  echo "setup: installing ${missing[*]} (apt-get)"
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  if ! $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null; then
    echo "setup: apt-get could not install all of: ${missing[*]}" >&2
  fi
  # mosquitto from apt starts a system service on :1883; the tests start their own brokers
  if [[ " ${missing[*]} " == *" mosquitto "* ]] && command -v systemctl >/dev/null 2>&1; then
    $SUDO systemctl stop mosquitto >/dev/null 2>&1 || true
  fi
fi

how() { if [ "$(id -u)" = 0 ]; then echo "apt-get install -y $*"; else echo "sudo apt-get install -y $*"; fi; }
why_not() {
  if [ "${SHOAL_NO_INSTALL:-0}" = 1 ]; then echo "SHOAL_NO_INSTALL=1"
  elif ! command -v apt-get >/dev/null 2>&1; then echo "no apt-get on this machine"
  else echo "not root and no passwordless sudo"; fi
}

status=0
still=()
for p in "${BUILD[@]}"; do installed "$p" || still+=("$p"); done
if [ "${#still[@]}" -gt 0 ]; then
  echo "setup: cannot build without ${still[*]} ($(why_not)); install with: $(how "${still[@]}")" >&2
  status=1
fi
if [ "$PURPOSE" != demo ]; then
  for p in "${TEST_ORDER[@]}"; do
    installed "$p" && continue
    reason=$(why_not)
    [ -n "${WITHOUT[$p]:-}" ] && reason="SHOAL_WITHOUT"
    echo "setup: SKIP $p is not installed ($reason): skipped: ${TEST_PKGS[$p]}; install with: $(how "$p")"
    [ "$PURPOSE" = ci ] && status=1
  done
  others=()
  for p in "${OTHER[@]}"; do installed "$p" || others+=("$p"); done
  if [ "${#others[@]}" -gt 0 ]; then
    echo "setup: not installed (used by make test-arm / check-deploy, not by make test): ${others[*]}; install with: $(how "${others[@]}")"
    [ "$PURPOSE" = ci ] && status=1
  fi
fi
exit $status
