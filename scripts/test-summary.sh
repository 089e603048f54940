#!/usr/bin/env bash
# Sums the `test result:` lines of a `cargo test` log: one line a reader (or CI) can check, with
# ignored tests counted as such and the names of those ignored, each with its reason.
set -euo pipefail
log=${1:?usage: test-summary.sh CARGO_TEST_LOG}
awk '
  /^test result: / {
    for (i = 1; i <= NF; i++) {
      if ($(i) ~ /^passed;?$/) p += $(i-1)
      if ($(i) ~ /^failed;?$/) f += $(i-1)
      if ($(i) ~ /^ignored;?$/) g += $(i-1)
    }
    bins++
  }
  / \.\.\. ignored/ { sub(/^test /, ""); ignored[++n] = $0 }
  END {
    printf "cargo test: %d passed, %d failed, %d ignored in %d test binaries\n", p, f, g, bins
    for (i = 1; i <= n; i++) print "  ignored: " ignored[i]
  }
' "$log"
