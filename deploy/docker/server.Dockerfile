# syntax=docker/dockerfile:1
# The engine: temporal-state-server. Build from the repository root:
#   docker build -f deploy/docker/server.Dockerfile -t temporal-state-server:dev .
# Runtime: debian bookworm-slim (glibc, as the builder), no shell tools added, no package
# manager run, numeric non-root user (so Kubernetes' runAsNonRoot can verify it), plus
# grpc_health_probe for `docker compose` health checks (Kubernetes uses native gRPC probes).

# ------------------------------------------------------------------ build the server
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
# The workspace's release profile keeps line tables for profiling; the image needs only the
# symbols (function names in backtraces).
ENV CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=debuginfo
# The cache mounts keep the registry and target/ between builds; the binary is copied out of
# the cached target/ in the same step.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p temporal-state-server \
    && install -D -m 0755 target/release/temporal-state-server /out/temporal-state-server \
    && install -d -m 0700 /out/var-lib/temporal-state

# ------------------------------------------------------------------ grpc_health_probe
# Built from its Go module at a pinned version (the module checksum database verifies it), not
# downloaded as a release binary.
FROM golang:1.26-bookworm AS probe
ENV CGO_ENABLED=0 GOBIN=/out GOFLAGS=-trimpath
RUN go install github.com/grpc-ecosystem/grpc-health-probe@v0.4.62 \
    && mv /out/grpc-health-probe /out/grpc_health_probe

# ------------------------------------------------------------------ runtime
FROM debian:bookworm-slim
# Root CAs for NATS over TLS (tls:// URLs); PostgreSQL and Redis connections are plain TCP today.
COPY --from=build /etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY --from=probe /out/grpc_health_probe /usr/local/bin/grpc_health_probe
COPY --from=build /out/temporal-state-server /usr/local/bin/temporal-state-server
# The embedded store's directory (used only without DATABASE_URL), owned by the server user.
# Copied as the content of its parent, so that --chown applies to the directory itself.
COPY --from=build --chown=10001:10001 /out/var-lib/ /var/lib/
ENV GRPC_ADDR=0.0.0.0:50051 \
    ADMIN_ADDR=0.0.0.0:9090 \
    DATA_DIR=/var/lib/temporal-state \
    RUST_LOG=info
USER 10001:10001
WORKDIR /var/lib/temporal-state
# 50051: gRPC and gRPC-web. 9090: the admin HTTP port (/metrics, /healthz, /readyz) once the
# server has it (see deploy/README.md, "Not built yet").
EXPOSE 50051 9090
HEALTHCHECK --interval=5s --timeout=3s --start-period=60s --retries=3 \
    CMD ["/usr/local/bin/grpc_health_probe", "-addr=127.0.0.1:50051", "-connect-timeout=2s", "-rpc-timeout=2s"]
ENTRYPOINT ["/usr/local/bin/temporal-state-server"]
CMD ["serve"]
