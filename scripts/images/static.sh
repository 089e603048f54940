#!/usr/bin/env bash
# Builds the binaries that must run without any libc of their host static (docs/images.md): the CNI
# plugin `hybridnet` (copied onto every node, whatever its libc) and the lab's `hybridnet-pause`.
# glibc's own static libraries (`-C target-feature=+crt-static` on the gnu target) need no extra
# Rust target; `--target` keeps the flag off build scripts and proc-macros.
# Usage: static.sh debug|release   Prints the folder holding both binaries.
set -euo pipefail
cd "$(dirname "$0")/../.."
profile="${1:-release}"
case "$profile" in
  debug) flags=() ;;
  release) flags=(--release) ;;
  *) echo "static.sh: profile $profile: want debug or release" >&2; exit 2 ;;
esac
CARGO="${CARGO:-cargo}"
triple="$(rustc -vV | sed -n 's/^host: //p')"
case "$triple" in
  *-linux-gnu) ;;
  *) echo "static.sh: host $triple: only *-linux-gnu hosts are supported" >&2; exit 2 ;;
esac
RUSTFLAGS="-C target-feature=+crt-static" "$CARGO" build -q --locked "${flags[@]}" --target "$triple" \
  -p hybridnet-cni --bin hybridnet -p hybridnet-pause --bin hybridnet-pause >&2
out="target/$triple/$profile"
for b in hybridnet hybridnet-pause; do
  # A static binary has no program interpreter and needs no shared library.
  if readelf -lW "$out/$b" | grep -q 'Requesting program interpreter' \
     || readelf -dW "$out/$b" | grep -q '(NEEDED)'; then
    echo "static.sh: $out/$b is not static" >&2
    exit 1
  fi
done
echo "$out"
