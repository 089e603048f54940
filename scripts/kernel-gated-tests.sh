#!/usr/bin/env bash
# Runs the tests that need a kernel feature some kernels lack. `cargo test` ignores them (so its
# summary counts them as ignored, never as passed); here a probe in a throwaway network namespace
# decides: where the kernel has the feature the test runs and must pass, where it lacks it the
# reason is printed. Needs root (the probe creates a network namespace), as the tests do.
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO=${CARGO:-cargo}

# feature name | probe (run inside the namespace) | cargo test selector
gated=(
  "802.1Q VLANs|ip link add d0 type dummy && ip link add link d0 name d0.5 type vlan id 5|-p hybridnet-node --test dataplane_apply tagged_vlans_where_the_kernel_has_8021q"
)

if [ "$(id -u)" != 0 ]; then
  if [ "${CI:-}" = true ]; then
    echo "kernel-gated tests: CI=true needs root to probe kernel features" >&2
    exit 1
  fi
  echo "SKIPPED kernel-gated tests: need root to probe kernel features in a network namespace"
  exit 0
fi

ns="hn-kprobe-$$"
ip netns add "$ns"
trap 'ip netns del "$ns" 2>/dev/null || true' EXIT

ran=0 skipped=0
for entry in "${gated[@]}"; do
  IFS='|' read -r feature probe selector <<<"$entry"
  if err=$(ip netns exec "$ns" sh -c "$probe" 2>&1); then
    read -r -a args <<<"$selector"
    test_name=${args[-1]}
    unset 'args[-1]'
    echo "kernel-gated: the kernel has $feature; running $test_name"
    "$CARGO" test "${args[@]}" -- --ignored --exact "$test_name"
    ran=$((ran + 1))
  else
    echo "SKIPPED ${selector##* } (counted as ignored above): this kernel has no $feature support ($err)"
    skipped=$((skipped + 1))
  fi
done
echo "kernel-gated tests: $ran ran, $skipped skipped for missing kernel features"
