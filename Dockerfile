# ficbroker container images.
#
#   docker build -t ficbroker:0.1.0 .                                  # the daemon (default target: runtime)
#   docker build --target transparent-init -t ficbroker-transparent-init:0.1.0 .   # optional iptables init
#
# The runtime image is FROM scratch: the stripped binary, the shared libraries `ldd` lists for it
# (glibc, libssl3, libcrypto3 and the loader; Boost.JSON and libstdc++ are linked statically),
# the CA bundle, and passwd/group entries for uid/gid 10001. No shell, no package manager, no curl:
# the HEALTHCHECK uses `ficbroker probe`. tests/deploy/run.sh checks this file statically.

############################################################################################
# build: compile and strip ficbroker, then assemble the runtime root file system in /rootfs
############################################################################################
FROM debian:bookworm AS build

ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        ca-certificates \
        cmake \
        ninja-build \
        g++ \
        libboost1.81-dev \
        libboost-json1.81-dev \
        libssl-dev \
        binutils \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# Only what the configure step of the top-level CMakeLists.txt reads (tests and bench are off).
COPY CMakeLists.txt ./
COPY include/ include/
COPY src/ src/
COPY emulator/ emulator/

RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DFICBROKER_BUILD_TESTS=OFF \
 && cmake --build build --target ficbroker \
 && strip --strip-all build/src/ficbroker

# The runtime root file system. Libraries are copied to the paths ldd prints (symlinks resolved),
# which are on the loader's default search path, so no ld.so.cache is needed. The chroot at the end
# runs the binary with exactly these files: a missing library fails the build here, not at run time.
RUN set -eu; \
    root=/rootfs; \
    mkdir -p "$root/usr/local/bin" "$root/etc/ssl/certs" "$root/etc/ficbroker" "$root/tmp"; \
    install -m 0755 build/src/ficbroker "$root/usr/local/bin/ficbroker"; \
    libs="$(ldd build/src/ficbroker | grep -o '/[^ ]*' || true)"; \
    for lib in $libs; do cp -L --parents "$lib" "$root/"; done; \
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"; \
    printf 'root:x:0:0:root:/root:/usr/sbin/nologin\nficbroker:x:10001:10001:ficbroker:/nonexistent:/usr/sbin/nologin\n' \
        > "$root/etc/passwd"; \
    printf 'root:x:0:\nficbroker:x:10001:\n' > "$root/etc/group"; \
    printf 'hosts: files dns\n' > "$root/etc/nsswitch.conf"; \
    chmod 1777 "$root/tmp"; \
    chmod 0755 "$root/etc/ficbroker"; \
    echo "runtime libraries:"; for lib in $libs; do echo "  $lib"; done; \
    chroot "$root" /usr/local/bin/ficbroker --version; \
    du -sh "$root"

############################################################################################
# transparent-init: optional init container for transparent mode (iptables REDIRECT of
# 169.254.169.254:80 to ficbroker). Runs as root with only CAP_NET_ADMIN; see
# deploy/kubernetes/transparent-mode.yaml. Uses the nf_tables backend, which needs no CAP_NET_RAW.
############################################################################################
FROM debian:bookworm-slim AS transparent-init

ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
 && apt-get install -y --no-install-recommends iptables \
 && rm -rf /var/lib/apt/lists/* \
 && update-alternatives --set iptables /usr/sbin/iptables-nft
COPY deploy/kubernetes/transparent-init.sh /usr/local/bin/transparent-init.sh
RUN chmod 0755 /usr/local/bin/transparent-init.sh
# Root is required to change the network namespace's nat table; the pod spec grants NET_ADMIN only.
USER 0:0
ENTRYPOINT ["/usr/local/bin/transparent-init.sh"]
CMD ["--apply"]

############################################################################################
# runtime (default target): scratch + ficbroker, as uid/gid 10001
############################################################################################
FROM scratch AS runtime

LABEL org.opencontainers.image.title="ficbroker" \
      org.opencontainers.image.description="Localhost broker for cross-tenant Microsoft Entra tokens via managed identity as a federated identity credential"

COPY --from=build /rootfs/ /

USER 10001:10001
EXPOSE 8181
# The default config listens on 127.0.0.1:8181; change the URL if your config's "listen" differs.
HEALTHCHECK --interval=15s --timeout=3s --start-period=30s --retries=3 \
    CMD ["/usr/local/bin/ficbroker", "probe", "http://127.0.0.1:8181/healthz"]
ENTRYPOINT ["/usr/local/bin/ficbroker"]
# Mount your configuration at /etc/ficbroker/config.jsonc (see config/*.jsonc).
CMD ["--config", "/etc/ficbroker/config.jsonc"]
