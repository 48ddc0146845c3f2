#!/usr/bin/env bash
# Builds and tries the server image on a machine that cannot pull base images (no registry):
# the root filesystem is assembled from a release binary, the shared libraries it links (ldd)
# and the CA bundle, `FROM scratch`, with Debian's podman. The image has the same layout, user
# and settings as deploy/docker/server.Dockerfile's, minus grpc_health_probe.
#
#   cargo build --release -p temporal-state-server
#   deploy/docker/local-image.sh build [binary]     -> localhost/temporal-state-server:local
#   deploy/docker/local-image.sh check              run it twice and check gRPC health with
#                                                   grpcurl: the embedded store on a published
#                                                   port, then PostgreSQL, Redis and NATS on the
#                                                   host's loopback (host network), read-only
#   deploy/docker/local-image.sh clean              remove the containers and the image
#
# Inside a sandbox without CAP_SYS_RESOURCE and with hybrid cgroups (as on the project's
# machines), crun cannot start containers and podman's default open-files limit cannot be set:
# the script uses runc and the current limits. See deploy/README.md, "Images".
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
IMAGE=localhost/temporal-state-server:local
PODMAN=(podman --runtime runc)
RUN_LIMITS=(--ulimit "nofile=$(ulimit -Sn):$(ulimit -Hn)" --ulimit "nproc=4096:4096")
export PATH="$ROOT/tools/bin:$PATH"

log() { printf 'local-image: %s\n' "$*" >&2; }

build() {
  local bin="${1:-$ROOT/target/release/temporal-state-server}" ctx lib
  [[ -x "$bin" ]] || { log "no binary at $bin: cargo build --release -p temporal-state-server"; exit 1; }
  ctx="$(mktemp -d)"
  trap 'rm -rf "$ctx"' RETURN
  mkdir -p "$ctx/rootfs/usr/local/bin" "$ctx/rootfs/etc/ssl/certs" "$ctx/rootfs/tmp" \
    "$ctx/rootfs/var/lib/temporal-state"
  install -m 0755 "$bin" "$ctx/rootfs/usr/local/bin/temporal-state-server"
  # The release profile keeps line tables (debug = 1) for profiling; the image keeps only the
  # symbols, as the Dockerfile's build does.
  strip --strip-debug "$ctx/rootfs/usr/local/bin/temporal-state-server"
  # The libraries the binary links, at the paths the dynamic loader looks for them.
  for lib in $(ldd "$bin" | awk '$2 == "=>" && $3 ~ /^\// {print $3} $1 ~ /^\// {print $1}'); do
    cp -L --parents "$lib" "$ctx/rootfs/"
  done
  cp -L /etc/ssl/certs/ca-certificates.crt "$ctx/rootfs/etc/ssl/certs/"
  printf 'tse:x:10001:10001::/var/lib/temporal-state:/nonexistent\n' >"$ctx/rootfs/etc/passwd"
  printf 'tse:x:10001:\n' >"$ctx/rootfs/etc/group"
  chmod 1777 "$ctx/rootfs/tmp"
  cat >"$ctx/Containerfile" <<'CONTAINERFILE'
FROM scratch
COPY rootfs/ /
COPY --chown=10001:10001 rootfs/var/lib/ /var/lib/
ENV GRPC_ADDR=0.0.0.0:50051 ADMIN_ADDR=0.0.0.0:9090 DATA_DIR=/var/lib/temporal-state RUST_LOG=info
USER 10001:10001
WORKDIR /var/lib/temporal-state
EXPOSE 50051 9090
ENTRYPOINT ["/usr/local/bin/temporal-state-server"]
CMD ["serve"]
CONTAINERFILE
  log "root filesystem: $(cd "$ctx/rootfs" && find . -type f | sort | tr '\n' ' ')"
  podman build --quiet -t "$IMAGE" "$ctx" >/dev/null
  log "built $IMAGE: $(podman image inspect "$IMAGE" --format '{{.Size}}') bytes"
}

# Waits until grpcurl's health check of $1 answers SERVING (30 s at most).
wait_serving() {
  local addr="$1" name="$2" i out
  for i in $(seq 1 60); do
    if out="$(grpcurl -plaintext -max-time 2 "$addr" grpc.health.v1.Health/Check 2>&1)" \
      && grep -q '"SERVING"' <<<"$out"; then
      log "$name: grpc.health.v1.Health/Check on $addr: $(tr -d ' \n' <<<"$out")"
      return 0
    fi
    sleep 0.5
  done
  log "$name: not SERVING after 30 s; last answer: $out"
  "${PODMAN[@]}" logs "$name" >&2 || true
  return 1
}

rss_of() {
  "${PODMAN[@]}" top "$1" rss 2>/dev/null | tail -n 1 | tr -d ' '
}

check() {
  local port=50061 db="tse_image_check_$$"
  # 1. Embedded store, published port, read-only root with a named volume for the data
  #    directory (a new volume takes the image directory's owner, 10001; a tmpfs here stays
  #    root's whatever its mode option says).
  "${PODMAN[@]}" rm -f tse-local-embedded >/dev/null 2>&1 || true
  podman volume rm -f tse-local-data >/dev/null 2>&1 || true
  "${PODMAN[@]}" run -d --name tse-local-embedded "${RUN_LIMITS[@]}" --read-only \
    -v tse-local-data:/var/lib/temporal-state \
    -p "127.0.0.1:$port:50051" "$IMAGE" >/dev/null
  wait_serving "127.0.0.1:$port" tse-local-embedded
  grpcurl -plaintext "127.0.0.1:$port" list >&2
  log "tse-local-embedded: rss $(rss_of tse-local-embedded) KiB"

  # 2. PostgreSQL (a database of its own), Redis and NATS on the host's loopback (the stream is
  #    the default TEMPORAL_STATE_EVENTS, as `cargo run` with NATS_URL would make it).
  psql -q -h 127.0.0.1 -U postgres -c "CREATE DATABASE $db" postgres
  "${PODMAN[@]}" rm -f tse-local-backends >/dev/null 2>&1 || true
  "${PODMAN[@]}" run -d --name tse-local-backends "${RUN_LIMITS[@]}" --read-only --network host \
    -e GRPC_ADDR="127.0.0.1:$((port + 1))" \
    -e DATABASE_URL="postgres://postgres@127.0.0.1:5432/$db" \
    -e REDIS_URL=redis://127.0.0.1:6379 -e NATS_URL=nats://127.0.0.1:4222 \
    "$IMAGE" >/dev/null
  wait_serving "127.0.0.1:$((port + 1))" tse-local-backends
  "${PODMAN[@]}" logs tse-local-backends 2>&1 | grep -E 'schema up to date|publishing events' >&2 || true
  log "tse-local-backends: rss $(rss_of tse-local-backends) KiB"
  # SIGTERM: the exit code and how long the drain took with nothing in flight.
  local start end
  start=$(date +%s%N)
  "${PODMAN[@]}" stop -t 30 tse-local-backends >/dev/null
  end=$(date +%s%N)
  log "tse-local-backends: stopped in $(( (end - start) / 1000000 )) ms, exit code $("${PODMAN[@]}" inspect tse-local-backends --format '{{.State.ExitCode}}')"
  "${PODMAN[@]}" rm -f tse-local-embedded tse-local-backends >/dev/null
  podman volume rm -f tse-local-data >/dev/null
  psql -q -h 127.0.0.1 -U postgres -c "DROP DATABASE $db" postgres
}

clean() {
  "${PODMAN[@]}" rm -f tse-local-embedded tse-local-backends >/dev/null 2>&1 || true
  podman volume rm -f tse-local-data >/dev/null 2>&1 || true
  podman rmi -f "$IMAGE" >/dev/null 2>&1 || true
}

case "${1:-}" in
  build) shift; build "$@" ;;
  check) check ;;
  clean) clean ;;
  *) sed -n '2,20p' "${BASH_SOURCE[0]}"; exit 2 ;;
esac
