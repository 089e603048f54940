#!/usr/bin/env bash
# Builds target/tools/cnitool (scripts/tools/cnitool/main.go) on Debian's libcni, offline, in
# GOPATH mode: packages golang-go and golang-github-appc-cni-dev (see .ci/packages.txt).
# Rebuilds only when the binary is missing or older than its source. Without Go it says so and
# exits 0 (unless CI=true): the tests that need cnitool then report the skip themselves.
set -euo pipefail
cd "$(dirname "$0")/../.."

src=scripts/tools/cnitool/main.go
out=target/tools/cnitool
if [ -x "$out" ] && [ "$out" -nt "$src" ]; then
  exit 0
fi
if ! command -v go >/dev/null 2>&1 || [ ! -d /usr/share/gocode/src/github.com/containernetworking/cni/libcni ]; then
  echo "cnitool: needs golang-go and golang-github-appc-cni-dev (make deps installs them)" >&2
  [ "${CI:-}" = "true" ] && exit 1
  exit 0
fi
work=target/tools/cnitool-build
rm -rf "$work"
mkdir -p "$work/gopath/src/cnitool" target/tools
cp "$src" "$work/gopath/src/cnitool/main.go"
GOPATH="$PWD/$work/gopath:/usr/share/gocode" GO111MODULE=off GOCACHE="$PWD/$work/gocache" \
  go build -o "$out.tmp" cnitool
mv "$out.tmp" "$out"
rm -rf "$work"
echo "cnitool: built $out"
