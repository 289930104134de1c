# RustyRaft runtime image: one `raft_client` node. The binary is built on the host first (Cargo's
# target/release/raft_client or Bazel's out/raft_client); `bin/docker_build` stages it next to
# this file and runs `docker build`. See docs/docker.md.
#
# The base is debian:bookworm-slim. Where no registry is reachable, `bin/docker_build` creates an
# equivalent image under that tag from a debootstrapped minimal bookworm root.
FROM debian:bookworm-slim

# A fixed non-root uid/gid, so volume ownership is predictable across rebuilds.
RUN groupadd --system --gid 10001 raft \
 && useradd --system --uid 10001 --gid raft --home-dir /data --no-create-home \
      --shell /usr/sbin/nologin raft \
 && mkdir -p /data \
 && chown raft:raft /data

COPY raft_client /usr/local/bin/raft_client

USER raft
WORKDIR /data
# Raft log, snapshots and chat segments live here; a named volume keeps them across restarts.
VOLUME ["/data"]
# gRPC: ChatService, Cluster, Raft (peer traffic), health and reflection all share this port.
EXPOSE 50051 51051 8080

# raft_client handles SIGTERM: it stops serving, lets the driver flush and exits 0.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=5s --timeout=3s --start-period=10s --retries=3 \
  CMD ["raft_client", "health", "--addr", "127.0.0.1:50051", "--timeout-ms", "2000"]

ENTRYPOINT ["raft_client"]
CMD ["--help"]
