# syntax=docker/dockerfile:1
# The web gateway: temporal-state-gateway (the console, embedded at compile time from the
# committed web-gateway/ui/dist, and the gRPC-web forwarder). Build from the repository root:
#   docker build -f deploy/docker/gateway.Dockerfile -t temporal-state-gateway:dev .
# No npm step: the console's build output is committed and embedded by the crate's build.rs.

# ------------------------------------------------------------------ build the gateway
FROM rust:1.95.0-bookworm AS build
WORKDIR /src
COPY . .
ENV CARGO_PROFILE_RELEASE_DEBUG=0 CARGO_PROFILE_RELEASE_STRIP=debuginfo
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p temporal-state-gateway \
    && install -D -m 0755 target/release/temporal-state-gateway /out/temporal-state-gateway

# ------------------------------------------------------------------ runtime
# bookworm-slim rather than distroless: its bash answers `docker compose`'s health check over
# /dev/tcp (an HTTP GET of /readyz) with no curl or wget added to the image.
FROM debian:bookworm-slim
COPY --from=build /out/temporal-state-gateway /usr/local/bin/temporal-state-gateway
ENV GATEWAY_ADDR=0.0.0.0:8080 \
    RUST_LOG=info
USER 10001:10001
EXPOSE 8080
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/8080 && printf 'GET /readyz HTTP/1.1\\r\\nHost: localhost\\r\\nConnection: close\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
ENTRYPOINT ["/usr/local/bin/temporal-state-gateway"]
