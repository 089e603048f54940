# One image for every hybridnet binary (like the original): the operator, the node agent, the CNI
# plugin and the kubectl plugin. Image name: <registry>/hybridnet:v<version> (see HybridnetCluster
# spec.registry / spec.version).
#
#   docker build -t docker.io/hybridnet/hybridnet:v0.1.0 .
#
# `make images` builds the same image offline with umoci (no base image, no registry): both run
# `scripts/images/build.sh rootfs`, so both have the same files (docs/images.md).

# ---- build ------------------------------------------------------------------------------------
FROM rust:1-bookworm AS build
# nftables, iptables and ipset: the programs the node agent runs (scripts/images/agent-tools.txt;
# iptables and ipset only to remove an upstream install's leftovers, docs/migration.md); the
# rootfs step copies them and their libraries into the image.
RUN apt-get update \
 && apt-get install -y --no-install-recommends nftables iptables ipset \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The CNI plugin is built static (scripts/images/static.sh): it runs on hosts of any libc.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p hybridnet-operator --bin hybridnet-operator \
        -p hybridnet-node --bin hybridnet-node \
        -p kubectl-hybridnet --bin kubectl-hybridnet \
 && scripts/images/build.sh rootfs /rootfs target/release "$(scripts/images/static.sh release)"

# ---- runtime ----------------------------------------------------------------------------------
# No distribution: the four binaries in /usr/local/bin, the agent tools and the shared libraries
# they need.
FROM scratch
COPY --from=build /rootfs/ /
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
# The operator runs as this unprivileged user. The node agent's DaemonSet sets runAsUser 0 with
# only NET_ADMIN, NET_RAW, SYS_ADMIN and NET_BIND_SERVICE (it programs the host network);
# its install-cni init container runs as root with no capability to write the host CNI dirs.
USER 65532:65532
CMD ["hybridnet-operator"]
