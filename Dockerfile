# One image for every hybridnet binary (like the original): the operator, the node agent, the CNI
# plugin and the kubectl plugin. Image name: <registry>/hybridnet:v<version> (see HybridnetCluster
# spec.registry / spec.version).
#
#   docker build -t docker.io/hybridnet/hybridnet:v0.1.0 .
#
# Not built in this repository's CI (no container engine there); see docs/operations.md.

# ---- build ------------------------------------------------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked \
        -p hybridnet-operator --bin hybridnet-operator \
        -p hybridnet-node --bin hybridnet-node \
        -p hybridnet-cni --bin hybridnet \
        -p kubectl-hybridnet --bin kubectl-hybridnet \
 && mkdir -p /out \
 && cp target/release/hybridnet-operator target/release/hybridnet-node \
       target/release/hybridnet target/release/kubectl-hybridnet /out/

# ---- runtime ----------------------------------------------------------------------------------
# Debian slim rather than distroless: the node agent runs `nft` (nftables) and `ip` (iproute2).
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends iproute2 nftables ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/ /usr/local/bin/
# The operator runs as this unprivileged user. The node agent's DaemonSet sets runAsUser 0 with
# only NET_ADMIN, NET_RAW, SYS_ADMIN and NET_BIND_SERVICE (it programs the host network);
# its install-cni init container runs as root with no capability to write the host CNI dirs.
USER 65532:65532
ENTRYPOINT []
CMD ["hybridnet-operator"]
