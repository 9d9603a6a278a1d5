#!/usr/bin/env bash
# check-deploy.sh — checks the deployment files without a Jetson:
#   1. shellcheck on the install script and scripts/
#   2. systemd-analyze verify on deploy/systemd units (and the mosquitto drop-in)
#      inside a throwaway root laid out like an installed device, so ExecStart
#      binaries, dependencies and every directive are really checked; any
#      warning fails. A deliberately broken copy must be rejected too.
#   3. systemd-analyze security --offline: exposure ceilings per unit
#   4. install-jetson.sh --dry-run for JetPack 5 and 6: the steps it plans,
#      the device.json it would write (validated against the device schema),
#      and its refusals (unsupported L4T, bad fleet key).
#   5. the memory/roofline tables in docs/jetson.md equal scripts/jetson-budget.mjs output
# Installs nothing: when a tool is missing it names the Debian packages.
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v shellcheck >/dev/null 2>&1 || missing+=(shellcheck)
command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)
command -v node >/dev/null 2>&1 || missing+=(nodejs)
if [ ! -f /usr/lib/systemd/system/mosquitto.service ] && [ ! -f /lib/systemd/system/mosquitto.service ]; then missing+=(mosquitto); fi
if [ "${#missing[@]}" -gt 0 ]; then
  echo "check-deploy: missing tools. Install them with:" >&2
  echo "  sudo apt-get install ${missing[*]}" >&2
  exit 2
fi
[ -d node_modules/ajv ] || { echo "check-deploy: run 'npm ci' first (the device.json check uses ajv)" >&2; exit 2; }

INSTALLER=deploy/install/install-jetson.sh
UNITS=(shoal-device.service shoal-controller.service)
DROPIN=deploy/systemd/mosquitto.service.d/shoal.conf
WORK=$(mktemp -d "${TMPDIR:-/tmp}/shoal-check-deploy.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
failures=0
fail() { echo "FAIL: $*"; failures=$((failures + 1)); }
pass() { echo "ok:   $*"; }

# ---- 1. shellcheck --------------------------------------------------------------------------
scripts=("$INSTALLER" scripts/*.sh)
[ ! -d deploy/container ] || while IFS= read -r f; do scripts+=("$f"); done < <(find deploy/container -name '*.sh' | sort)
if shellcheck -x "${scripts[@]}"; then
  pass "shellcheck $(shellcheck --version | sed -n 's/^version: //p'): ${scripts[*]}"
else
  fail "shellcheck found problems (above)"
fi

# ---- 2. systemd-analyze verify in a root laid out like an installed device ---------------------
ROOT=$WORK/root
mkdir -p "$ROOT/etc/systemd/system/mosquitto.service.d" "$ROOT/usr/lib/systemd" "$ROOT/usr/bin" \
         "$ROOT/usr/sbin" "$ROOT/opt/shoal/bin" "$ROOT/opt/shoal/packages/cli/dist/src"
ln -s usr/bin "$ROOT/bin"
ln -s usr/sbin "$ROOT/sbin"
ln -s usr/lib "$ROOT/lib"
# the distribution's units (sysinit.target, network-online.target, mosquitto.service, ...)
cp -a /usr/lib/systemd/system "$ROOT/usr/lib/systemd/"
# programs the units run; node as the installer links it: /opt/shoal/bin/node -> /usr/bin/node
copy_prog() { # host path -> same path in the root (hard link when possible)
  local src dst=$ROOT$1
  src=$(readlink -f "$1")
  ln "$src" "$dst" 2>/dev/null || cp "$src" "$dst"
}
ln "$(readlink -f "$(command -v node)")" "$ROOT/usr/bin/node" 2>/dev/null || cp "$(readlink -f "$(command -v node)")" "$ROOT/usr/bin/node"
ln -s /usr/bin/node "$ROOT/opt/shoal/bin/node"
: >"$ROOT/opt/shoal/packages/cli/dist/src/main.js"
for p in /usr/sbin/mosquitto /usr/bin/mkdir /usr/bin/chown /usr/bin/kill; do
  [ -e "$p" ] || p=/bin/${p##*/}
  copy_prog "$p"
done
for u in "${UNITS[@]}"; do cp "deploy/systemd/$u" "$ROOT/etc/systemd/system/$u"; done
cp "$DROPIN" "$ROOT/etc/systemd/system/mosquitto.service.d/shoal.conf"

# verify_units LOG UNIT...: 0 when systemd-analyze exits 0 and prints nothing.
verify_units() {
  local log=$1 rc
  shift
  set +e
  systemd-analyze verify --root="$ROOT" --man=no --generators=no "$@" >"$log" 2>&1
  rc=$?
  set -e
  [ "$rc" -eq 0 ] && [ ! -s "$log" ]
}

if verify_units "$WORK/verify.log" "${UNITS[@]}" mosquitto.service; then
  pass "systemd-analyze verify: ${UNITS[*]} mosquitto.service + $DROPIN ($(systemd-analyze --version | head -1))"
else
  fail "systemd-analyze verify:"; sed 's/^/      /' "$WORK/verify.log"
fi
# the check must be able to fail: a misspelt directive and a missing binary are reported
cp "$ROOT/etc/systemd/system/shoal-device.service" "$WORK/device.orig"
sed -i 's/^WatchdogSec=/WatchdgSec=/' "$ROOT/etc/systemd/system/shoal-device.service"
if verify_units "$WORK/neg1.log" shoal-device.service; then fail "a misspelt directive went unnoticed"; else pass "a misspelt directive is reported: $(head -1 "$WORK/neg1.log" | sed "s|$ROOT||")"; fi
cp "$WORK/device.orig" "$ROOT/etc/systemd/system/shoal-device.service"
rm "$ROOT/opt/shoal/bin/node"
if verify_units "$WORK/neg2.log" shoal-device.service; then fail "a missing ExecStart binary went unnoticed"; else pass "a missing ExecStart binary is reported: $(head -1 "$WORK/neg2.log")"; fi
ln -s /usr/bin/node "$ROOT/opt/shoal/bin/node"

# directives the device daemon relies on (packages/device/src/sdnotify.ts notifies through the
# systemd-notify helper, so READY=1/WATCHDOG=1 come from a child: NotifyAccess=all)
require_line() { # unit line
  if grep -qxF -- "$2" "deploy/systemd/$1"; then :; else fail "$1 lacks '$2'"; fi
}
before=$failures
for l in Type=notify NotifyAccess=all Restart=on-failure StateDirectory=shoal User=shoal \
         ProtectSystem=strict ProtectHome=true NoNewPrivileges=true PrivateTmp=true \
         ReadWritePaths=/var/lib/shoal "SupplementaryGroups=video render" DevicePolicy=closed \
         "DeviceAllow=/dev/nvmap rw" "DeviceAllow=/dev/nvhost-ctrl-gpu rw" \
         "ExecStart=/opt/shoal/bin/node /opt/shoal/packages/cli/dist/src/main.js device --config /etc/shoal/device.json"; do
  require_line shoal-device.service "$l"
done
grep -qE '^WatchdogSec=[1-9][0-9]*s?$' deploy/systemd/shoal-device.service || fail "shoal-device.service: WatchdogSec= missing"
grep -q "systemd-notify" packages/device/src/sdnotify.ts 2>/dev/null || echo "note: packages/device/src/sdnotify.ts no longer uses systemd-notify; NotifyAccess=main may do"
require_line shoal-controller.service "ExecStart=/opt/shoal/bin/node /opt/shoal/packages/cli/dist/src/main.js controller --config /etc/shoal/controller.json"
[ "$failures" -ne "$before" ] || pass "required directives present (notify + watchdog, hardening, GPU device allow-list)"

# ---- 3. exposure ceilings (systemd-analyze security, offline) ------------------------------------
check_exposure() { # unit ceiling
  local out level
  out=$(systemd-analyze security --offline=yes --root="$ROOT" "$1" 2>&1 || true)
  level=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' <<<"$out")
  if [ -z "$level" ]; then fail "systemd-analyze security $1 gave no score"; return; fi
  if awk -v l="$level" -v c="$2" 'BEGIN { exit !(l <= c) }'; then pass "$1 exposure $level <= $2"
  else fail "$1 exposure $level > $2 (hardening was weakened)"; fi
}
check_exposure shoal-device.service 4.0
check_exposure shoal-controller.service 2.5

# ---- 4. the installer, dry run -------------------------------------------------------------------
node -e "const { generateKeyPairSync } = require('node:crypto'); const { publicKey } = generateKeyPairSync('ed25519'); require('node:fs').writeFileSync(process.argv[1], publicKey.export({ type: 'spki', format: 'pem' }));" "$WORK/fleet.pem"
: >"$WORK/node-v20.18.0-linux-arm64.tar.xz" # only its name is checked under --dry-run

# validate_device_json FILE DEVICE_ID BROKER_URL: against the daemon's own JSON schema
validate_device_json() {
  node -e "
    const Ajv = require('ajv').default ?? require('ajv').Ajv;
    const schema = require('./packages/device/src/config/schema.json');
    const cfg = JSON.parse(require('node:fs').readFileSync(process.argv[1], 'utf8'));
    const v = new Ajv({ allErrors: true, useDefaults: true, strict: false }).compile(schema);
    if (!v(cfg)) { console.error(JSON.stringify(v.errors)); process.exit(1); }
    if (cfg.deviceId !== process.argv[2] || cfg.broker.url !== process.argv[3]) { console.error('deviceId/broker.url not as given'); process.exit(1); }
  " "$@"
}
echo '{ "configVersion": 1, "deviceId": "x", "broker": { "url": "http://nope" }, "store": { "dir": "/x" }, "fleetPublicKey": "k" }' >"$WORK/bad.json"
if validate_device_json "$WORK/bad.json" x http://nope 2>/dev/null; then fail "the device.json schema check accepts a bad broker URL"; fi

# written_file LOG PATH: the content the dry run would write to PATH
written_file() { awk -v p="+ write $2 " 'index($0, p) { on = 1; next } on && /^      \| / { sub(/^      \| /, ""); print; next } on { exit }' "$1"; }
# validate_controller_json FILE: through the controller's own resolveConfig (needs `make ts`);
# the token and key files it names are replaced by stand-ins here
standin_token=0123456789abcdef0123456789abcdef
printf '%s\n' "$standin_token" >"$WORK/controller.token"
validate_controller_json() {
  node --input-type=module -e "
    import { readFileSync } from 'node:fs';
    const { resolveConfig } = await import(process.cwd() + '/packages/controller/dist/src/config.js');
    const raw = JSON.parse(readFileSync(process.argv[1], 'utf8'));
    if (raw.tokenFile !== '/etc/shoal/controller.token' || raw.dataDir !== '/var/lib/shoal-controller') throw new Error('unexpected tokenFile/dataDir');
    raw.tokenFile = process.argv[2];
    if (raw.fleetPublicKey) raw.fleetPublicKey = process.argv[3];
    const c = resolveConfig(raw, '/');
    if (c.broker.url !== process.argv[4]) throw new Error('broker.url not as given');
  " "$@"
}

# a dry run changes nothing: these must look the same afterwards
snapshot() { for p in /opt/shoal /opt/shoal.new /etc/shoal /var/lib/shoal /etc/systemd/system/shoal-device.service /usr/local/bin/shoal; do
  if [ -e "$p" ] || [ -L "$p" ]; then stat -c '%n %i %Y' "$p"; else echo "$p absent"; fi; done; getent passwd shoal || true; }
snapshot >"$WORK/before.txt"
for rel in R35.4.1 R36.4.3; do
  log=$WORK/install-$rel.log
  if ! "$INSTALLER" --dry-run --l4t "$rel" --device-id orin-ci-1 --broker mqtts://broker.example:8883 \
        --fleet-key "$WORK/fleet.pem" --controller --power-mode 0 --jetson-clocks >"$log" 2>&1; then
    fail "installer dry run for $rel failed:"; sed 's/^/      /' "$log"; continue
  fi
  case $rel in R35*) jp=5 ;; *) jp=6 ;; esac
  before=$failures
  for want in "JetPack $jp" "npm ci" "cmake-js compile" "tsc -b" \
              "useradd --system" "/etc/shoal/device.json" "/etc/shoal/controller.json" \
              "/etc/systemd/system/shoal-device.service" "systemctl enable shoal-device.service shoal-controller.service" \
              "nvpmodel -m 0" "+ jetson_clocks" "mv /opt/shoal.new /opt/shoal"; do
    grep -qF -- "$want" "$log" || fail "installer dry run ($rel) does not show '$want'"
  done
  written_file "$log" /etc/shoal/device.json >"$WORK/device-$rel.json"
  if ! validate_device_json "$WORK/device-$rel.json" orin-ci-1 mqtts://broker.example:8883 2>"$WORK/ajv.log"; then
    fail "device.json from the $rel dry run is not valid for packages/device/src/config/schema.json: $(cat "$WORK/ajv.log")"
  fi
  written_file "$log" /etc/shoal/controller.json >"$WORK/controller-$rel.json"
  if [ -f packages/controller/dist/src/config.js ]; then
    validate_controller_json "$WORK/controller-$rel.json" "$WORK/controller.token" "$WORK/fleet.pem" mqtts://broker.example:8883 2>"$WORK/ctl.log" \
      || fail "controller.json from the $rel dry run is rejected by the controller's resolveConfig: $(cat "$WORK/ctl.log")"
    ctl_note="controller.json accepted by resolveConfig"
  else
    ctl_note="controller.json not checked: no packages/controller/dist (make ts)"
  fi
  [ "$failures" -ne "$before" ] || pass "installer --dry-run for L4T $rel (JetPack $jp): steps, schema-valid device.json, $ctl_note"
done
snapshot >"$WORK/after.txt"
if cmp -s "$WORK/before.txt" "$WORK/after.txt"; then pass "the dry runs changed nothing on this machine"
else fail "a dry run changed the system:"; diff "$WORK/before.txt" "$WORK/after.txt" || true; fi
# the tarball path
if "$INSTALLER" --dry-run --l4t R36.4.3 --node-tarball "$WORK/node-v20.18.0-linux-arm64.tar.xz" >"$WORK/tarball.log" 2>&1 \
   && grep -qF "/opt/shoal.new/node --strip-components=1" "$WORK/tarball.log" \
   && grep -qF "ln -sfn /opt/shoal/node/bin/node /opt/shoal.new/bin/node" "$WORK/tarball.log"; then
  pass "installer --node-tarball unpacks Node into the prefix"
else
  fail "installer --node-tarball dry run:"; sed 's/^/      /' "$WORK/tarball.log"
fi
# CUDA: detected, not assumed (fake nvcc; a checkout copy with and without a CUDA option)
mkdir -p "$WORK/cuda/bin" "$WORK/nocuda" "$WORK/repo/native" "$WORK/repo/deploy/install"
printf '#!/bin/sh\necho "Cuda compilation tools, release 12.6, V12.6.68"\n' >"$WORK/cuda/bin/nvcc"
chmod +x "$WORK/cuda/bin/nvcc"
cp package.json "$WORK/repo/"
cp "$INSTALLER" "$WORK/repo/deploy/install/"
grep -v 'option(SHOAL_[A-Z0-9_]*CUDA' native/CMakeLists.txt >"$WORK/repo/native/CMakeLists.txt"
cuda_case() { # name expected-grep-fixed-string cuda_home repo-installer args...
  local name=$1 want=$2 home=$3 inst=$4
  shift 4
  if CUDA_HOME=$home "$inst" --dry-run --l4t R36.4.3 "$@" >"$WORK/cuda.log" 2>&1 && grep -qF -- "$want" "$WORK/cuda.log"; then
    pass "CUDA detection: $name"
  else
    fail "CUDA detection: $name (expected '$want'):"; sed 's/^/      /' "$WORK/cuda.log" | tail -15
  fi
}
cuda_case "nvcc but no CUDA option in native/CMakeLists.txt -> CPU kernels only" "has no CUDA backend option" "$WORK/cuda" "$WORK/repo/$INSTALLER"
echo 'option(SHOAL_CUDA "CUDA backend" OFF)' >>"$WORK/repo/native/CMakeLists.txt"
cuda_case "nvcc and option(SHOAL_CUDA) -> built for sm_87" "--CDSHOAL_CUDA=ON --CDCMAKE_CUDA_ARCHITECTURES=87 --CDCMAKE_CUDA_COMPILER=$WORK/cuda/bin/nvcc" "$WORK/cuda" "$WORK/repo/$INSTALLER"
cuda_case "no nvcc -> CPU kernels only" "no $WORK/nocuda/bin/nvcc" "$WORK/nocuda" "$WORK/repo/$INSTALLER"
cuda_case "--no-cuda wins over nvcc and the option" "CUDA: off (--no-cuda)" "$WORK/cuda" "$WORK/repo/$INSTALLER" --no-cuda
if grep -q 'option(SHOAL_[A-Z0-9_]*CUDA' native/CMakeLists.txt; then
  cuda_case "this checkout's CUDA option is picked up" "--CDCMAKE_CUDA_ARCHITECTURES=87" "$WORK/cuda" "$INSTALLER"
fi
# refusals
expect_refusal() { # what args...
  local what=$1
  shift
  if "$INSTALLER" --dry-run "$@" >"$WORK/refuse.log" 2>&1; then fail "installer accepted $what"
  else pass "installer refuses $what: $(grep -m1 '^\[install-jetson.sh\] error:' "$WORK/refuse.log" | sed 's/^\[[^]]*\] error: //')"; fi
}
expect_refusal "L4T R32 (JetPack 4)" --l4t R32.7.4
CUDA_HOME=$WORK/nocuda expect_refusal "--cuda without nvcc" --l4t R36.4.3 --cuda
echo "not a key" >"$WORK/bad.pem"
expect_refusal "a fleet key that is not Ed25519" --l4t R36.4.3 --fleet-key "$WORK/bad.pem"
: >"$WORK/node-v20.18.0-linux-x64.tar.xz"
expect_refusal "a tarball for the wrong architecture" --l4t R36.4.3 --node-tarball "$WORK/node-v20.18.0-linux-x64.tar.xz"
if [ ! -e /etc/nv_tegra_release ]; then expect_refusal "a non-Jetson host without --l4t" --device-id x; fi

# ---- 5. docs/jetson.md tables are the computed ones ----------------------------------------------
if node scripts/jetson-budget.mjs --check docs/jetson.md >"$WORK/budget.log" 2>&1; then pass "$(cat "$WORK/budget.log")"
else fail "docs/jetson.md:"; sed 's/^/      /' "$WORK/budget.log"; fi

if [ "$failures" -ne 0 ]; then
  echo "check-deploy: FAILED ($failures)" >&2
  exit 1
fi
echo "check-deploy: OK"
