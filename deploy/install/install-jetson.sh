#!/usr/bin/env bash
# install-jetson.sh — installs Shoal on an NVIDIA Jetson Orin running JetPack 5
# (L4T R35, Ubuntu 20.04) or JetPack 6 (L4T R36, Ubuntu 22.04):
#   Node 20, build tools, the native addon (with CUDA for sm_87 when nvcc and the
#   engine's CUDA option exist), the app under /opt/shoal, a `shoal` system user,
#   /etc/shoal and /var/lib/shoal, a default /etc/shoal/device.json, and the
#   systemd units from deploy/systemd. Run from a checkout of the repository:
#
#     sudo deploy/install/install-jetson.sh --fleet-key fleet-public.pem \
#          --broker mqtts://broker.example:8883 [--power-mode 0 --jetson-clocks]
#     deploy/install/install-jetson.sh --dry-run       # prints what it would do
#
# Re-running upgrades in place: the new tree is built beside the old one and
# swapped in while the service is stopped. Existing config files are kept.
# See docs/jetson.md.
set -euo pipefail

PROG=install-jetson.sh
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)

# Fixed locations: deploy/systemd/*.service refer to these paths.
PREFIX=/opt/shoal
ETC_DIR=/etc/shoal
STATE_DIR=/var/lib/shoal
CONTROLLER_STATE_DIR=/var/lib/shoal-controller
UNIT_DIR=/etc/systemd/system
CUDA_HOME=${CUDA_HOME:-/usr/local/cuda}
NODE_MAJOR=20
NODE_MIN_MINOR=17 # package.json engines: node >= 20.17

DRY_RUN=0
NODE_TARBALL=""
DEVICE_ID=""
BROKER_URL=""
FLEET_KEY=""
WITH_CONTROLLER=0
WITH_BROKER=0
POWER_MODE=""
JETSON_CLOCKS=0
CUDA_MODE=auto
CUDA_ARCH=87
L4T_OVERRIDE=""
START=1
JOBS=$(nproc 2>/dev/null || echo 2)

usage() {
  cat <<EOF
Usage: $PROG [options]

  --dry-run              print every step (commands, files) without changing anything
  --node-tarball FILE    install Node from an official node-v20.x-linux-arm64.tar.{xz,gz}
                         into $PREFIX/node instead of the NodeSource apt repository
  --device-id ID         deviceId for a new device.json (default: the host name)
  --broker URL           MQTT broker URL for a new device.json/controller.json
                         (default: mqtt://localhost:1883, or the local broker with --with-broker)
  --fleet-key FILE       Ed25519 fleet public key (PEM); installed as $ETC_DIR/fleet-public.pem.
                         The daemon refuses to start without one.
  --controller           also install and enable shoal-controller.service
  --with-broker          also install mosquitto with deploy/mosquitto/ (TLS on 8883, ACLs,
                         generated credentials) and the shoal drop-in for mosquitto.service
  --cuda | --no-cuda     force the CUDA build on or off (default: on when $CUDA_HOME/bin/nvcc
                         exists and native/CMakeLists.txt has a CUDA option)
  --cuda-arch N          CMAKE_CUDA_ARCHITECTURES (default: 87, Orin's Ampere iGPU)
  --power-mode N         run 'nvpmodel -m N' (see docs/jetson.md for the modes per module)
  --jetson-clocks        run 'jetson_clocks' once (pins CPU/GPU/EMC at the mode's maximum;
                         lasts until reboot)
  --no-start             install and enable the units but do not (re)start them
  --l4t RELEASE          use this L4T release (e.g. R36.4.3) instead of detecting it;
                         for --dry-run on other machines
  -j, --jobs N           parallel compile jobs (default: $JOBS)
  -h, --help             this text
EOF
}

log() { printf '[%s] %s\n' "$PROG" "$*"; }
warn() { printf '[%s] warning: %s\n' "$PROG" "$*" >&2; }
die() { printf '[%s] error: %s\n' "$PROG" "$*" >&2; exit 1; }

# run CMD...: executes, or prints it under --dry-run.
run() {
  if [ "$DRY_RUN" = 1 ]; then
    printf '  + %s\n' "$(printf '%q ' "$@")"
  else
    "$@"
  fi
}

# run_in DIR CMD...: like run, in DIR.
run_in() {
  local dir=$1
  shift
  if [ "$DRY_RUN" = 1 ]; then
    printf '  + (cd %q && %s)\n' "$dir" "$(printf '%q ' "$@")"
  else
    (cd "$dir" && "$@")
  fi
}

# write_file PATH MODE OWNER:GROUP: writes stdin to PATH atomically, or prints it.
write_file() {
  local path=$1 mode=$2 owner=$3 tmp
  if [ "$DRY_RUN" = 1 ]; then
    printf '  + write %s (mode %s, owner %s):\n' "$path" "$mode" "$owner"
    sed 's/^/      | /'
    return 0
  fi
  tmp=$(mktemp "$path.XXXXXX")
  cat >"$tmp"
  chmod "$mode" "$tmp"
  chown "$owner" "$tmp"
  mv -f "$tmp" "$path"
}

while [ $# -gt 0 ]; do
  case $1 in
    --dry-run) DRY_RUN=1 ;;
    --node-tarball) NODE_TARBALL=${2:?--node-tarball needs a file}; shift ;;
    --device-id) DEVICE_ID=${2:?--device-id needs a value}; shift ;;
    --broker) BROKER_URL=${2:?--broker needs a URL}; shift ;;
    --fleet-key) FLEET_KEY=${2:?--fleet-key needs a file}; shift ;;
    --controller) WITH_CONTROLLER=1 ;;
    --with-broker) WITH_BROKER=1 ;;
    --cuda) CUDA_MODE=on ;;
    --no-cuda) CUDA_MODE=off ;;
    --cuda-arch) CUDA_ARCH=${2:?--cuda-arch needs a value}; shift ;;
    --power-mode) POWER_MODE=${2:?--power-mode needs a mode number}; shift ;;
    --jetson-clocks) JETSON_CLOCKS=1 ;;
    --no-start) START=0 ;;
    --l4t) L4T_OVERRIDE=${2:?--l4t needs a release like R36.4.3}; shift ;;
    -j|--jobs) JOBS=${2:?--jobs needs a number}; shift ;;
    -h|--help) usage; exit 0 ;;
    *) usage >&2; die "unknown option: $1" ;;
  esac
  shift
done

[[ $CUDA_ARCH =~ ^[0-9]+[a-z]?$ ]] || die "--cuda-arch: expected a number like 87, got '$CUDA_ARCH'"
[[ $JOBS =~ ^[1-9][0-9]*$ ]] || die "--jobs: expected a positive number, got '$JOBS'"
[ -z "$POWER_MODE" ] || [[ $POWER_MODE =~ ^[0-9]+$ ]] || die "--power-mode: expected a mode number, got '$POWER_MODE'"
if [ "$DRY_RUN" = 0 ] && [ "$(id -u)" != 0 ]; then
  die "run as root (sudo $0 ...), or add --dry-run to see the steps"
fi
if [ ! -f "$SRC/package.json" ] || [ ! -f "$SRC/native/CMakeLists.txt" ]; then die "$SRC is not a Shoal checkout"; fi
[ "$DRY_RUN" = 1 ] && log "dry run: nothing is changed"

# ---- 1. platform: L4T release -> JetPack and Ubuntu -----------------------------------
# /etc/nv_tegra_release: "# R36 (release), REVISION: 4.3, GCID: ..., BOARD: generic, EABI: aarch64, ..."
# nvidia-l4t-core version: "36.4.3-20250107174145"
l4t_from_file() {
  [ -r /etc/nv_tegra_release ] || return 0
  sed -n 's/^# R\([0-9][0-9]*\) (release), REVISION: \([0-9][0-9.]*\),.*/\1.\2/p' /etc/nv_tegra_release | head -1
}
l4t_from_dpkg() {
  command -v dpkg-query >/dev/null 2>&1 || return 0
  local v
  v=$(dpkg-query -W -f='${Version}' nvidia-l4t-core 2>/dev/null || true)
  printf '%s\n' "${v%%-*}"
}

if [ -n "$L4T_OVERRIDE" ]; then
  L4T=${L4T_OVERRIDE#R}
  log "L4T release R$L4T (from --l4t)"
else
  L4T_FILE=$(l4t_from_file)
  L4T_DPKG=$(l4t_from_dpkg)
  if [ -n "$L4T_DPKG" ]; then
    L4T=$L4T_DPKG
    if [ -n "$L4T_FILE" ] && [ "$L4T_FILE" != "$L4T_DPKG" ]; then
      warn "/etc/nv_tegra_release says R$L4T_FILE, package nvidia-l4t-core says $L4T_DPKG; using the package"
    fi
  else
    L4T=$L4T_FILE
  fi
  [ -n "$L4T" ] || die "not a Jetson: no /etc/nv_tegra_release and no nvidia-l4t-core package (use --l4t R36.4.3 with --dry-run to preview elsewhere)"
  log "L4T release R$L4T (nvidia-l4t-core ${L4T_DPKG:-absent}, /etc/nv_tegra_release ${L4T_FILE:-absent})"
fi
[[ $L4T =~ ^[0-9]+(\.[0-9]+)*$ ]] || die "cannot parse L4T release '$L4T'"
case ${L4T%%.*} in
  35) JETPACK=5; UBUNTU=20.04 ;;
  36) JETPACK=6; UBUNTU=22.04 ;;
  *) die "L4T R$L4T is not supported: Shoal needs JetPack 5 (R35) or JetPack 6 (R36) on Jetson Orin" ;;
esac
log "JetPack $JETPACK (expects Ubuntu $UBUNTU)"
if [ -r /etc/os-release ]; then
  OS_VERSION=$(sed -n 's/^VERSION_ID="\{0,1\}\([^"]*\)"\{0,1\}$/\1/p' /etc/os-release)
  if [ "$OS_VERSION" != "$UBUNTU" ]; then
    if [ -n "$L4T_OVERRIDE" ]; then log "this host's /etc/os-release VERSION_ID is ${OS_VERSION:-empty} (fine for a preview)"
    else warn "this host runs Ubuntu ${OS_VERSION:-?}, JetPack $JETPACK ships $UBUNTU"; fi
  fi
fi
ARCH=$(uname -m)
if [ "$ARCH" != aarch64 ]; then
  [ "$DRY_RUN" = 1 ] || die "this is $ARCH; Jetson Orin is aarch64 (cross-compile check: make test-arm)"
  log "host is $ARCH: previewing the aarch64 install"
fi

DEVICE_ID=${DEVICE_ID:-$(hostname -s 2>/dev/null || hostname)}
DEVICE_ID=$(printf '%s' "$DEVICE_ID" | tr -c 'A-Za-z0-9_.-' '-' | cut -c1-64)
[[ $DEVICE_ID =~ ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$ ]] || die "--device-id '$DEVICE_ID' must match [A-Za-z0-9][A-Za-z0-9_.-]{0,63}"
if [ -n "$FLEET_KEY" ] && [ ! -r "$FLEET_KEY" ]; then die "--fleet-key: cannot read $FLEET_KEY"; fi
if [ -n "$NODE_TARBALL" ]; then
  [ -r "$NODE_TARBALL" ] || die "--node-tarball: cannot read $NODE_TARBALL"
  case $(basename "$NODE_TARBALL") in
    node-v"$NODE_MAJOR".*-linux-arm64.tar.xz|node-v"$NODE_MAJOR".*-linux-arm64.tar.gz) ;;
    *) die "--node-tarball: expected node-v$NODE_MAJOR.x-linux-arm64.tar.xz (or .tar.gz), got $(basename "$NODE_TARBALL")" ;;
  esac
fi

STAGE=$PREFIX.new        # the new tree is built here, then swapped in
BUILD_CACHE=/var/cache/shoal # build-only tools (CMake from PyPI on JetPack 5)

APT_UPDATED=0
apt_install() {
  local want=() p
  for p in "$@"; do
    [ "$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)" = "install ok installed" ] || want+=("$p")
  done
  [ "${#want[@]}" -gt 0 ] || return 0
  if [ "$APT_UPDATED" = 0 ]; then run apt-get update; APT_UPDATED=1; fi
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends "${want[@]}"
}

# ---- 2. build tools ----------------------------------------------------------------------
log "build tools: cmake, g++, make, python3"
apt_install ca-certificates curl gnupg xz-utils cmake g++ make python3 python3-venv openssl
# native/CMakeLists.txt needs CMake >= 3.18; Ubuntu 20.04 (JetPack 5) ships 3.16.
CMAKE_BIN_DIR=""
cmake_version=$(cmake --version 2>/dev/null | sed -n 's/^cmake version \([0-9.]*\).*/\1/p' | head -1)
if [ -z "$cmake_version" ] || [ "$(printf '%s\n3.18\n' "$cmake_version" | sort -V | head -1)" != 3.18 ]; then
  [ "$JETPACK" = 5 ] && [ -z "$cmake_version" ] && cmake_version="3.16 (Ubuntu 20.04)"
  log "cmake ${cmake_version:-(not installed yet)} is older than 3.18: installing CMake from PyPI into $BUILD_CACHE/venv"
  run python3 -m venv "$BUILD_CACHE/venv"
  run "$BUILD_CACHE/venv/bin/pip" install --quiet 'cmake>=3.18,<4'
  CMAKE_BIN_DIR=$BUILD_CACHE/venv/bin
fi

# ---- 3. Node 20 ----------------------------------------------------------------------------
node_ok() { # node binary -> 0 when it is >= 20.17
  "$1" -e "const [a, b] = process.versions.node.split('.').map(Number); process.exit(a > $NODE_MAJOR || (a === $NODE_MAJOR && b >= $NODE_MIN_MINOR) ? 0 : 1)" 2>/dev/null
}
run rm -rf "$STAGE"
run mkdir -p "$STAGE/bin"
if [ -n "$NODE_TARBALL" ]; then
  # unpacked into the new tree; after the swap it is $PREFIX/node
  NODE_BIN=$STAGE/node/bin/node
  log "Node from $NODE_TARBALL into $PREFIX/node"
  run mkdir -p "$STAGE/node"
  run tar -xf "$NODE_TARBALL" -C "$STAGE/node" --strip-components=1 --no-same-owner
  if [ "$DRY_RUN" = 0 ] && ! node_ok "$NODE_BIN"; then die "$NODE_BIN from the tarball does not run or is older than $NODE_MAJOR.$NODE_MIN_MINOR"; fi
elif command -v node >/dev/null 2>&1 && node_ok "$(command -v node)"; then
  NODE_BIN=$(command -v node)
  log "Node $("$NODE_BIN" --version) already installed at $NODE_BIN"
else
  NODE_BIN=/usr/bin/node
  log "Node $NODE_MAJOR from the NodeSource apt repository (deb.nodesource.com)"
  run install -d -m 0755 /etc/apt/keyrings
  if [ "$DRY_RUN" = 1 ]; then
    printf '  + curl -fsSL https://deb.nodesource.com/gpgkey/nodesource-repo.gpg.key | gpg --dearmor -o /etc/apt/keyrings/nodesource.gpg\n'
  else
    curl -fsSL https://deb.nodesource.com/gpgkey/nodesource-repo.gpg.key | gpg --dearmor --yes -o /etc/apt/keyrings/nodesource.gpg
  fi
  write_file /etc/apt/sources.list.d/nodesource.list 0644 root:root <<EOF
deb [signed-by=/etc/apt/keyrings/nodesource.gpg] https://deb.nodesource.com/node_$NODE_MAJOR.x nodistro main
EOF
  run apt-get update
  run env DEBIAN_FRONTEND=noninteractive apt-get install -y nodejs
  if [ "$DRY_RUN" = 0 ] && ! node_ok "$NODE_BIN"; then die "nodejs from NodeSource did not give Node >= $NODE_MAJOR.$NODE_MIN_MINOR at $NODE_BIN"; fi
fi
NODE_DIR=$(dirname "$NODE_BIN")
if [ -n "$FLEET_KEY" ] && [ -x "$NODE_BIN" ]; then
  "$NODE_BIN" -e "try { const k = require('node:crypto').createPublicKey(require('node:fs').readFileSync(process.argv[1], 'utf8')); if (k.asymmetricKeyType !== 'ed25519') throw new Error('key type ' + k.asymmetricKeyType); } catch (e) { console.error(e.message); process.exit(1); }" "$FLEET_KEY" \
    || die "--fleet-key $FLEET_KEY is not an Ed25519 public key in PEM form (make one with: shoal keygen)"
fi

# ---- 4. CUDA: detect, don't assume -----------------------------------------------------------
NVCC=$CUDA_HOME/bin/nvcc
CUDA_OPTION=$(sed -n 's/^[[:space:]]*option([[:space:]]*\(SHOAL_[A-Z0-9_]*CUDA[A-Z0-9_]*\)[[:space:]].*/\1/p' "$SRC/native/CMakeLists.txt" | head -1)
CMAKE_JS_DEFINES=()
if [ "$CUDA_MODE" = off ]; then
  log "CUDA: off (--no-cuda); CPU kernels only (NEON / NEON-dotprod)"
elif [ ! -x "$NVCC" ]; then
  [ "$CUDA_MODE" = on ] && die "--cuda: $NVCC not found (install the JetPack CUDA toolkit: apt-get install nvidia-jetpack, or set CUDA_HOME)"
  log "CUDA: no $NVCC; building the CPU kernels only (install nvidia-jetpack for the GPU backend)"
elif [ -z "$CUDA_OPTION" ]; then
  [ "$CUDA_MODE" = on ] && die "--cuda: native/CMakeLists.txt of this checkout has no CUDA option"
  log "CUDA: $NVCC found, but this checkout's native/CMakeLists.txt has no CUDA backend option; CPU kernels only"
else
  log "CUDA: $NVCC ($("$NVCC" --version | sed -n 's/.*release \([0-9.]*\).*/\1/p')), building with -D$CUDA_OPTION=ON -DCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCH"
  CMAKE_JS_DEFINES=("--CD$CUDA_OPTION=ON" "--CDCMAKE_CUDA_ARCHITECTURES=$CUDA_ARCH" "--CDCMAKE_CUDA_COMPILER=$NVCC")
fi

# ---- 5. build the app in a staging tree beside /opt/shoal ------------------------------------
log "building Shoal from $SRC in $STAGE"
if [ "$DRY_RUN" = 1 ]; then
  printf '  + tar -C %q -c (the checkout, without .git node_modules dist native/build*) | tar -C %q -x\n' "$SRC" "$STAGE"
else
  tar -C "$SRC" --exclude=./.git --exclude=./node_modules --exclude=./dist --exclude='./packages/*/dist' --exclude='./native/build*' \
      --exclude=./.tap --exclude=./tmp --exclude=./.gl --exclude=./.whl --exclude=./.bench \
      -cf - . | tar -C "$STAGE" -xf - --no-same-owner
fi
BUILD_ENV=(PATH="$NODE_DIR:${CMAKE_BIN_DIR:+$CMAKE_BIN_DIR:}$PATH")
# Node's own headers (tarball: node/include/node; NodeSource: /usr/include/node) spare
# cmake-js and node-gyp the header download from nodejs.org.
NODE_ROOT=$(dirname "$NODE_DIR")
if [ -f "$NODE_ROOT/include/node/node.h" ] || [ -n "$NODE_TARBALL" ]; then BUILD_ENV+=(npm_config_nodedir="$NODE_ROOT"); fi
run_in "$STAGE" env "${BUILD_ENV[@]}" npm ci --no-audit --no-fund
run_in "$STAGE" env "${BUILD_ENV[@]}" npx cmake-js compile --directory native --out native/build \
  --parallel "$JOBS" --log-level warn "${CMAKE_JS_DEFINES[@]}"
run_in "$STAGE" env "${BUILD_ENV[@]}" npx tsc -b
run_in "$STAGE" env "${BUILD_ENV[@]}" npm prune --omit=dev --no-audit --no-fund
if [ "$DRY_RUN" = 0 ]; then
  [ -f "$STAGE/native/build/Release/shoal.node" ] || die "the addon was not built ($STAGE/native/build/Release/shoal.node missing)"
  [ -f "$STAGE/packages/cli/dist/src/main.js" ] || die "the TypeScript build produced no packages/cli/dist/src/main.js"
  # the addon must load on this machine
  (cd "$STAGE" && "$NODE_BIN" -e "require('./native/build/Release/shoal.node')") || die "the built addon does not load"
fi
FINAL_NODE_BIN=$NODE_BIN
[ -z "$NODE_TARBALL" ] || FINAL_NODE_BIN=$PREFIX/node/bin/node
run ln -sfn "$FINAL_NODE_BIN" "$STAGE/bin/node"
write_file "$STAGE/bin/shoal" 0755 root:root <<EOF
#!/bin/sh
exec $PREFIX/bin/node $PREFIX/packages/cli/dist/src/main.js "\$@"
EOF
[ "$DRY_RUN" = 1 ] || chown -R root:root "$STAGE"

# ---- 6. user, groups, directories --------------------------------------------------------------
log "system user 'shoal' (groups video, render), $ETC_DIR, $STATE_DIR"
getent group render >/dev/null 2>&1 || run groupadd --system render
getent group video >/dev/null 2>&1 || run groupadd --system video
if ! id -u shoal >/dev/null 2>&1; then
  run useradd --system --user-group --home-dir "$STATE_DIR" --no-create-home \
      --shell /usr/sbin/nologin --comment "Shoal device daemon" shoal
fi
run usermod -a -G video,render shoal
run install -d -m 0750 -o root -g shoal "$ETC_DIR"
run install -d -m 0750 -o shoal -g shoal "$STATE_DIR" "$STATE_DIR/models"

# ---- 7. optional local broker (deploy/mosquitto, written for the fleet) -------------------------
BROKER_USER="" BROKER_PASS="" BROKER_CA=""
if [ "$WITH_BROKER" = 1 ]; then
  log "mosquitto with deploy/mosquitto/ in /etc/mosquitto/shoal"
  apt_install mosquitto mosquitto-clients
  run install -d -m 0755 /etc/mosquitto/shoal
  run install -m 0644 "$SRC/deploy/mosquitto/mosquitto.conf" /etc/mosquitto/shoal/mosquitto.conf
  if [ ! -f /etc/mosquitto/shoal/passwords ]; then
    run "$SRC/deploy/mosquitto/make-credentials.sh" /etc/mosquitto/shoal "$DEVICE_ID"
    run chown mosquitto:mosquitto /etc/mosquitto/shoal/passwords /etc/mosquitto/shoal/server.key
  else
    run install -m 0644 "$SRC/deploy/mosquitto/acl.conf" /etc/mosquitto/shoal/acl.conf
  fi
  run install -d -m 0755 "$UNIT_DIR/mosquitto.service.d"
  run install -m 0644 "$SRC/deploy/systemd/mosquitto.service.d/shoal.conf" "$UNIT_DIR/mosquitto.service.d/shoal.conf"
  BROKER_URL=${BROKER_URL:-mqtts://localhost:8883}
  BROKER_CA=/etc/mosquitto/shoal/ca.crt
  if [ "$DRY_RUN" = 0 ]; then
    BROKER_PASS=$(awk -v u="$DEVICE_ID" '$1 == u { print $2 }' /etc/mosquitto/shoal/credentials.txt 2>/dev/null || true)
    [ -n "$BROKER_PASS" ] && BROKER_USER=$DEVICE_ID
  else
    BROKER_USER=$DEVICE_ID BROKER_PASS="<from /etc/mosquitto/shoal/credentials.txt>"
  fi
fi
BROKER_URL=${BROKER_URL:-mqtt://localhost:1883}

# ---- 8. configuration ----------------------------------------------------------------------------
if [ -n "$FLEET_KEY" ]; then
  run install -m 0644 -o root -g root "$FLEET_KEY" "$ETC_DIR/fleet-public.pem"
fi
json_str() { # a JSON string literal (the node binary may not exist yet under --dry-run)
  local s=${1//\\/\\\\}
  s=${s//\"/\\\"}
  printf '"%s"' "$s"
}
if [ -f "$ETC_DIR/device.json" ]; then
  log "keeping the existing $ETC_DIR/device.json"
else
  broker_extra=""
  [ -z "$BROKER_USER" ] || broker_extra+=", \"username\": $(json_str "$BROKER_USER"), \"password\": $(json_str "$BROKER_PASS")"
  [ -z "$BROKER_CA" ] || broker_extra+=", \"caFile\": $(json_str "$BROKER_CA")"
  write_file "$ETC_DIR/device.json" 0640 root:shoal <<EOF
{
  "configVersion": 1,
  "deviceId": $(json_str "$DEVICE_ID"),
  "labels": { "l4t": "R$L4T", "jetpack": "$JETPACK" },
  "broker": { "url": $(json_str "$BROKER_URL")$broker_extra },
  "store": { "dir": "$STATE_DIR/models" },
  "fleetPublicKey": "$ETC_DIR/fleet-public.pem",
  "engine": { "backend": "auto", "threads": 0 },
  "http": { "enabled": true, "host": "127.0.0.1", "port": 8088 },
  "jetson": { "sysfsRoot": "/" }
}
EOF
fi
if [ "$WITH_CONTROLLER" = 1 ]; then
  if [ -f "$ETC_DIR/controller.token" ]; then :; elif [ "$DRY_RUN" = 1 ]; then
    printf '  + write %s (mode 0640, owner root:shoal): 32 random bytes, hex\n' "$ETC_DIR/controller.token"
  else
    openssl rand -hex 32 | write_file "$ETC_DIR/controller.token" 0640 root:shoal
  fi
  if [ -f "$ETC_DIR/controller.json" ]; then
    log "keeping the existing $ETC_DIR/controller.json"
  else
    ctl_key=""
    [ -z "$FLEET_KEY" ] || ctl_key=$',\n  "fleetPublicKey": "'"$ETC_DIR/fleet-public.pem"'"'
    ctl_broker=""
    [ -z "$BROKER_CA" ] || ctl_broker=", \"ca\": $(json_str "$BROKER_CA")"
    write_file "$ETC_DIR/controller.json" 0640 root:shoal <<EOF
{
  "broker": { "url": $(json_str "$BROKER_URL")$ctl_broker },
  "http": { "host": "127.0.0.1", "port": 8080 },
  "tokenFile": "$ETC_DIR/controller.token",
  "dataDir": "$CONTROLLER_STATE_DIR"$ctl_key
}
EOF
  fi
fi

# ---- 9. swap the new tree in and (re)start the units ---------------------------------------------
UNITS=(shoal-device.service)
[ "$WITH_CONTROLLER" = 1 ] && UNITS+=(shoal-controller.service)
was_active=()
if [ "$DRY_RUN" = 0 ] && command -v systemctl >/dev/null 2>&1; then
  for u in "${UNITS[@]}"; do systemctl is-active --quiet "$u" && was_active+=("$u"); done
fi
[ "${#was_active[@]}" -eq 0 ] || run systemctl stop "${was_active[@]}"
if [ -d "$PREFIX" ] || [ "$DRY_RUN" = 1 ]; then
  run rm -rf "$PREFIX.old"
  [ ! -d "$PREFIX" ] || run mv "$PREFIX" "$PREFIX.old"
fi
run mv "$STAGE" "$PREFIX"
NODE_BIN=$FINAL_NODE_BIN
run ln -sfn "$PREFIX/bin/shoal" /usr/local/bin/shoal
run rm -rf "$PREFIX.old"

log "systemd units: ${UNITS[*]}"
for u in "${UNITS[@]}"; do
  run install -m 0644 "$SRC/deploy/systemd/$u" "$UNIT_DIR/$u"
done
run systemctl daemon-reload
run systemctl enable "${UNITS[@]}"
if [ "$WITH_BROKER" = 1 ]; then run systemctl enable mosquitto.service; run systemctl restart mosquitto.service; fi

# ---- 10. power mode ---------------------------------------------------------------------------------
if [ -n "$POWER_MODE" ]; then
  command -v nvpmodel >/dev/null 2>&1 || [ "$DRY_RUN" = 1 ] || die "--power-mode: nvpmodel not found (part of nvidia-l4t-nvpmodel)"
  log "power mode $POWER_MODE (persists across reboots; some mode changes ask for a reboot)"
  run nvpmodel -m "$POWER_MODE"
  run nvpmodel -q
fi
if [ "$JETSON_CLOCKS" = 1 ]; then
  command -v jetson_clocks >/dev/null 2>&1 || [ "$DRY_RUN" = 1 ] || die "--jetson-clocks: jetson_clocks not found (part of nvidia-l4t-tools)"
  log "jetson_clocks: CPU, GPU and EMC at the current mode's maximum until reboot"
  run jetson_clocks
  run jetson_clocks --show
fi

if [ "$START" = 1 ]; then
  if [ -f "$ETC_DIR/fleet-public.pem" ] || [ -n "$FLEET_KEY" ]; then
    run systemctl restart "${UNITS[@]}"
    log "started: journalctl -u shoal-device -f   |   shoal device status"
  else
    warn "no fleet key: copy the fleet's Ed25519 public key to $ETC_DIR/fleet-public.pem, then: systemctl start ${UNITS[*]}"
  fi
fi
log "done: $PREFIX (node $NODE_BIN), config $ETC_DIR, state $STATE_DIR"
