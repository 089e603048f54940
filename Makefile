# hybridnet: `make test` runs everything CI runs; `make demo` runs the lab.
SHELL := /bin/bash
CARGO ?= cargo
export PATH := $(HOME)/.cargo/bin:$(PATH)

.PHONY: test deps tools fmt-check clippy unit crds demo bench images bundle-pinned

test: deps tools fmt-check clippy unit

deps:
	@scripts/install-deps.sh

# Test tools built from Debian packages (for example a libcni client); see scripts/.
tools: deps
	@for t in scripts/tools/*.sh; do [ -e "$$t" ] && bash "$$t"; done; true

fmt-check:
	$(CARGO) fmt --all -- --check

clippy:
	$(CARGO) clippy --workspace --all-targets -- -D warnings

# The end-to-end tests run the workspace's binaries (operator, node agent, CNI plugin, kube-lite);
# the image tests run the images built from the same debug binaries (and the static plugin).
# Tests that need a kernel feature this kernel may lack are ignored by cargo and run (or reported
# skipped) by scripts/kernel-gated-tests.sh; the summary counts every test binary's results.
unit:
	$(CARGO) build --workspace --bins
	IMAGES_OPTIONAL=1 scripts/images/build.sh images debug
	set -o pipefail; $(CARGO) test --workspace 2>&1 | tee target/test-output.log
	scripts/kernel-gated-tests.sh
	@scripts/test-summary.sh target/test-output.log

# OCI image archives in target/images/, built offline from release binaries (docs/images.md).
images: deps
	$(CARGO) build --release --locked -p hybridnet-operator --bin hybridnet-operator \
		-p hybridnet-node --bin hybridnet-node -p kubectl-hybridnet --bin kubectl-hybridnet
	scripts/images/build.sh images release

# Pins bundle/, bundle.Dockerfile and deploy/ to the digest of the hybridnet image `make images`
# built (reproducible: docs/images.md); a release step, the committed files name the tag.
bundle-pinned:
	$(CARGO) run -q -p hybridnet-operator --bin bundlegen -- \
		--image-digest "$$(scripts/images/build.sh digest target/images/hybridnet.oci.tar)"

# Regenerates the committed CRD YAML from the Rust types.
crds:
	$(CARGO) run -q -p hybridnet-api --bin crdgen

# The lab benchmark runs the workspace's release binaries.
bench:
	$(CARGO) build --release --workspace --bins
	$(CARGO) bench --workspace

demo: deps
	$(CARGO) build -q --workspace --bins
	target/debug/hybridnet-lab demo
