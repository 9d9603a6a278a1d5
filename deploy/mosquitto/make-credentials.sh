#!/usr/bin/env bash
# Creates a throwaway CA, a server certificate for 127.0.0.1/localhost, and a
# mosquitto password file with one random password per device plus the
# controller. Usage: ./make-credentials.sh OUT_DIR DEVICE_ID...
# Prints "user password" lines to OUT_DIR/credentials.txt (mode 0600).
set -euo pipefail
out=${1:?usage: make-credentials.sh OUT_DIR DEVICE_ID...}
shift
mkdir -p "$out"
umask 077
here=$(cd "$(dirname "$0")" && pwd)

openssl req -x509 -newkey ed25519 -nodes -days 365 -subj "/CN=shoal-test-ca" \
  -keyout "$out/ca.key" -out "$out/ca.crt" 2>/dev/null
openssl req -newkey ed25519 -nodes -subj "/CN=localhost" \
  -keyout "$out/server.key" -out "$out/server.csr" 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' > "$out/server.ext"
openssl x509 -req -in "$out/server.csr" -CA "$out/ca.crt" -CAkey "$out/ca.key" -CAcreateserial \
  -days 365 -extfile "$out/server.ext" -out "$out/server.crt" 2>/dev/null
rm -f "$out/server.csr" "$out/server.ext"

: > "$out/passwords"
: > "$out/credentials.txt"
for user in shoal-controller "$@"; do
  pass=$(openssl rand -hex 16)
  mosquitto_passwd -b "$out/passwords" "$user" "$pass"
  printf '%s %s\n' "$user" "$pass" >> "$out/credentials.txt"
done
cp "$here/acl.conf" "$out/acl.conf"
chmod 0644 "$out/ca.crt" "$out/server.crt" "$out/acl.conf"
echo "wrote $out: ca.crt server.crt server.key passwords acl.conf credentials.txt"
