#!/usr/bin/env bash
# Installs PyPI `kubernetes-validate` (offline OpenAPI validator with bundled Kubernetes schemas up
# to 1.37) into a venv at target/tools/kv-venv. The lifecycle tests run it on every rendered
# manifest (operator/tests/lifecycle_bundle.rs). Needs python3-venv (.ci/packages.txt) and PyPI
# once; afterwards it works offline. Without python3 it says so and exits 0 (unless CI=true).
set -euo pipefail
cd "$(dirname "$0")/../.."

version=1.37.0
venv=target/tools/kv-venv
bin=$venv/bin/kubernetes-validate
if [ -x "$bin" ] && "$bin" --version 2>/dev/null | grep -q "$version"; then
  exit 0
fi
if ! command -v python3 >/dev/null 2>&1 || ! python3 -m venv --help >/dev/null 2>&1; then
  echo "kubernetes-validate: needs python3 with venv (make deps installs python3-venv)" >&2
  [ "${CI:-}" = "true" ] && exit 1
  exit 0
fi
rm -rf "$venv"
mkdir -p target/tools
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$version"
"$bin" --version
echo "kubernetes-validate: installed $bin"
