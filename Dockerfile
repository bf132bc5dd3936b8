# syntax=docker/dockerfile:1
# The nfs-server-provisioner image: a release build of the one binary on a slim Debian base.
#
#   docker build -t nfs-server-provisioner:0.1.0 .
#   docker buildx build --platform linux/amd64,linux/arm64 \
#       -t REGISTRY/nfs-server-provisioner:0.1.0 --push .
#
# The build stage runs for each target platform (under QEMU emulation for the foreign one when
# buildx is set up with binfmt), so no cross toolchain is needed.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build
WORKDIR /src
COPY . .
# No debug info and stripped symbols: the image carries only what runs.
ENV CARGO_PROFILE_RELEASE_DEBUG=none \
    CARGO_PROFILE_RELEASE_STRIP=symbols
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked -p nfs-server-provisioner --bin nfs-server-provisioner \
 && install -D -m 0755 target/release/nfs-server-provisioner /out/nfs-server-provisioner

FROM debian:${DEBIAN_RELEASE}-slim
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="nfs-server-provisioner" \
      org.opencontainers.image.description="Userspace NFS server and Kubernetes dynamic provisioner for ReadWriteMany volumes" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /out/nfs-server-provisioner /usr/local/bin/nfs-server-provisioner
# The export root: mount a persistent volume here.
VOLUME /export
# NFS (v3 and v4.1/4.2), MOUNT, portmapper, NLM and statd (NFSv3 locking, TCP and UDP), HTTP.
EXPOSE 2049/tcp 20048/tcp 111/tcp 32803/tcp 32803/udp 662/tcp 662/udp 8080/tcp
ENTRYPOINT ["/usr/local/bin/nfs-server-provisioner"]
CMD ["serve", "--export-root=/export"]
