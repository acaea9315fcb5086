# One image with the three binaries: /usr/local/bin/audit-processor, audit-sink and auditctl.
# The Kubernetes manifests in deploy/ pick the binary with `command:`.
#
#   docker build -t auditstream:0.1.0 .      (BuildKit, the default builder since Docker 23)
#
# Build stage: librdkafka, zlib, zstd, SQLite and mimalloc are compiled from source by their -sys
# crates with the C toolchain (no cmake: rdkafka-sys runs librdkafka's own configure and make, which
# also wants python3). OpenSSL for TLS/SCRAM towards Kafka is compiled from source too (rdkafka's
# `ssl-vendored` feature, which wants perl, part of build-essential); TLS towards stores is rustls.
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-slim-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends build-essential python3 pkg-config perl \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The processor is built on its own: built together with the sinks, cargo would unify its
# serde_json features with the MongoDB driver's (`preserve_order`), and its pipeline is ~12 % slower
# with order-preserving maps (docs/PROCESSOR.md). Its output does not depend on it either way.
# The processor's `--profile production` is `--release` with whole-program optimization (Cargo.toml;
# the sinks, which wait on I/O, drained no faster with it). The registry and target directories
# are BuildKit caches: a rebuild after a source change takes minutes, not the full half hour. The binaries are copied out of the cache in the same step, their
# line tables kept (a panic names file and line) but compressed: auditctl is ~90 MB instead of ~230.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --profile production --locked -p audit-processor \
 && cargo build --release --locked -p audit-sink -p auditctl \
 && install -D -m 0755 -t /out target/production/audit-processor target/release/audit-sink target/release/auditctl \
 && for b in /out/*; do objcopy --compress-debug-sections=zlib "$b"; done

# Runtime: glibc, libgcc and CA certificates, no shell, no package manager; runs as the
# image's `nonroot` user (65532), which the manifests also require (runAsNonRoot, read-only root
# filesystem: the binaries write only to mounted volumes).
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="auditstream" \
      org.opencontainers.image.description="audit-processor, audit-sink and auditctl" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/ /usr/local/bin/
USER 65532:65532
# The processor's and the sinks' /metrics, /healthz and /readyz.
EXPOSE 9464 9465
ENTRYPOINT ["/usr/local/bin/auditctl"]
CMD ["--help"]
