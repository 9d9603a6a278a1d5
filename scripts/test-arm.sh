#!/usr/bin/env bash
# test-arm.sh — cross-compile native/ for aarch64 (Jetson Orin's ISA) and run
# the native test suite under qemu-user, so the NEON and NEON-dotprod kernels
# are executed and compared against the scalar reference, and stories260K's
# greedy output is checked against reference_greedy.json on every ARM kernel set.
#
#   scripts/test-arm.sh            (or: make test-arm)
#
# Environment:
#   JOBS           parallel compile jobs (default: nproc)
#   SHOAL_SHARED   shared data folder (default: <repo>/../shared)
#   ARM_BUILD_DIR  build folder (default: native/build-aarch64)
#   QEMU_CPU       CPU model with dotprod+fp16 like Orin's Cortex-A78AE
#                  (default: cortex-a76; neoverse-n1 and max also work)
#   QEMU_CPU_BASE  CPU model without dotprod, to check that run-time dispatch
#                  falls back to plain NEON (default: cortex-a72)
# Installs nothing: when a tool is missing it names the Debian packages.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD

TRIPLE=aarch64-linux-gnu
SYSROOT=/usr/$TRIPLE
BUILD=${ARM_BUILD_DIR:-native/build-aarch64}
JOBS=${JOBS:-$(nproc)}
QEMU_CPU=${QEMU_CPU:-cortex-a76}
QEMU_CPU_BASE=${QEMU_CPU_BASE:-cortex-a72}
export SHOAL_SHARED=${SHOAL_SHARED:-$REPO/../shared}

missing=()
command -v cmake >/dev/null 2>&1 || missing+=(cmake)
command -v "$TRIPLE-g++" >/dev/null 2>&1 || missing+=("g++-$TRIPLE")
command -v qemu-aarch64 >/dev/null 2>&1 || missing+=(qemu-user)
if [ "${#missing[@]}" -gt 0 ]; then
  echo "test-arm: missing tools. Install them with:" >&2
  echo "  sudo apt-get install ${missing[*]}" >&2
  exit 2
fi
if [ ! -f "$SYSROOT/lib/ld-linux-aarch64.so.1" ]; then
  echo "test-arm: $SYSROOT has no aarch64 C library (install libc6-dev-arm64-cross, pulled in by g++-$TRIPLE)" >&2
  exit 2
fi
known_cpus=" $(qemu-aarch64 -cpu help | awk 'NR > 1 { printf "%s ", $1 }' || true)"
for cpu in "$QEMU_CPU" "$QEMU_CPU_BASE"; do
  case $known_cpus in
    *" $cpu "*) ;;
    *) echo "test-arm: this qemu-aarch64 does not know CPU model '$cpu'; it knows:$known_cpus" >&2
       exit 2 ;;
  esac
done
if [ ! -f "$REPO/models/stories260K/model.safetensors" ]; then
  echo "test-arm: models/stories260K/model.safetensors is missing from the checkout" >&2
  exit 2
fi

echo "== test-arm: $("$TRIPLE-g++" --version | head -1); $(qemu-aarch64 --version | head -1)"
cmake -S native -B "$BUILD" -DCMAKE_TOOLCHAIN_FILE="$REPO/native/cmake/$TRIPLE.cmake" \
      -DCMAKE_BUILD_TYPE=Release -DSHOAL_TESTS=ON -DSHOAL_ADDON=OFF >/dev/null
cmake --build "$BUILD" --parallel "$JOBS"

TESTS=(test-backend-ops test-model-source test-stories test-arch-ops test-arch)
for t in "${TESTS[@]}"; do
  hdr=$("$TRIPLE-readelf" -h "$BUILD/$t" 2>/dev/null || true)
  if ! grep -q 'Machine:.*AArch64' <<<"$hdr"; then
    echo "test-arm: $BUILD/$t is not an aarch64 executable" >&2
    exit 1
  fi
done

LOGDIR=$BUILD/test-logs
mkdir -p "$LOGDIR"
failures=0

# run_test CPU TEST: runs TEST under qemu with CPU, checks exit status and the
# closing "N passed, 0 failed" line (N > 0).
run_test() {
  local cpu=$1 t=$2 log="$LOGDIR/$2.$1.log" start end
  start=$(date +%s)
  set +e
  qemu-aarch64 -L "$SYSROOT" -cpu "$cpu" "$BUILD/$t" >"$log" 2>&1
  local rc=$?
  set -e
  end=$(date +%s)
  local summary
  summary=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$log" | tail -1 || true)
  printf '%-18s -cpu %-12s %-26s rc=%d %ss\n' "$t" "$cpu" "${summary:-(no summary line)}" "$rc" "$((end - start))"
  if [ "$rc" -ne 0 ] || ! [[ "$summary" =~ ^[1-9][0-9]*\ passed,\ 0\ failed$ ]]; then
    echo "---- $log (last 40 lines)"; tail -40 "$log"; echo "----"
    failures=$((failures + 1))
    return 1
  fi
  if grep -q '^SKIP' "$log"; then
    echo "test-arm: $t skipped part of its work:"; grep '^SKIP' "$log"
    failures=$((failures + 1))
    return 1
  fi
  return 0
}

# isas_of CPU TEST: the ISAs a test reports it ran, space-separated.
# test-backend-ops prints "ISAs here: scalar neon ..." and then compares every
# one of them (1 and 2 threads) against the scalar reference; test-stories
# prints "<isa> kv=f32 lm_head=native: logits max relative error ..." once per kernel set it ran.
isas_of() {
  local log="$LOGDIR/$2.$1.log"
  case $2 in
    test-backend-ops) sed -n 's/^ISAs here: //p' "$log" | head -1 ;;
    test-stories) sed -n 's/^\([a-z0-9-]*\) kv=f32 lm_head=native: logits max relative error.*/\1/p' "$log" | paste -sd' ' - ;;
  esac
}

# isa_check CPU TEST "EXPECTED LIST": the reported ISAs must be exactly these.
isa_check() {
  local got
  got=$(isas_of "$1" "$2")
  if [ "$got" != "$3" ]; then
    echo "test-arm: $2 under -cpu $1 ran ISAs '${got:-none}', expected '$3'"
    failures=$((failures + 1))
  else
    printf '%-18s -cpu %-12s ISAs checked: %s\n' "$2" "$1" "$got"
  fi
}

echo "== ARMv8.2 with dotprod+fp16 (-cpu $QEMU_CPU, like Orin's Cortex-A78AE): every kernel set"
for t in "${TESTS[@]}"; do run_test "$QEMU_CPU" "$t" || true; done
isa_check "$QEMU_CPU" test-backend-ops "scalar neon neon-dotprod"
isa_check "$QEMU_CPU" test-stories "scalar neon neon-dotprod"

echo "== ARMv8.0 without dotprod (-cpu $QEMU_CPU_BASE): dispatch must fall back to plain NEON"
for t in test-backend-ops test-stories; do run_test "$QEMU_CPU_BASE" "$t" || true; done
isa_check "$QEMU_CPU_BASE" test-backend-ops "scalar neon"
isa_check "$QEMU_CPU_BASE" test-stories "scalar neon"

echo "== stories260K logits vs the float64 reference, per kernel set (-cpu $QEMU_CPU):"
grep -E 'logits max relative error' "$LOGDIR/test-stories.$QEMU_CPU.log" | sed 's/^/   /' || true
if [ "$failures" -ne 0 ]; then
  echo "test-arm: FAILED ($failures problem(s)); logs in $LOGDIR" >&2
  exit 1
fi
echo "test-arm: OK (logs in $LOGDIR)"
