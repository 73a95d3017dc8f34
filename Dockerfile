# Kiln's container image: a build stage that compiles build/kiln with
# Debian's toolchain, a staging stage that assembles the final filesystem
# in /rootfs (the binary, stripped; the shared objects it loads, found by
# the dynamic loader itself; the CA store; the kiln user), and a final
# stage FROM scratch that is that folder and nothing else: no shell, no
# package manager, no Debian base (docs/OPERATIONS.md, The container image).
#
#   make image                    buildah, from a local debootstrapped base
#                                 (scripts/image.sh; no registry needed);
#                                 amd64 and arm64 (qemu), sizes and smoke test
#   scripts/deploy.sh             linux/arm64 for ECS Fargate, pushed to ECR
#   docker build -t kiln .        anywhere Docker Hub is reachable
#
# Nothing here names an architecture: the same file builds amd64 and arm64
# (buildah bud --platform linux/arm64, docker buildx --platform ...).
#
# BASE is any Debian 12 (bookworm) image with apt sources configured: the
# official debian:bookworm-slim by default, localhost/kiln-base:bookworm
# when scripts/image.sh made one with debootstrap. It is the build and
# staging stages' base only: none of it reaches the final image.
ARG BASE=docker.io/library/debian:bookworm-slim

# ---------------------------------------------------------------- build --
FROM ${BASE} AS build
ENV DEBIAN_FRONTEND=noninteractive
WORKDIR /src

# The compiler and -dev packages: the "# build" section of
# scripts/debian-packages.txt, the one list the Makefile's deps target also
# installs from, less clang (only the sanitizer and fuzz builds use it).
# node-llhttp only ships llhttp's C sources, but depends on nodejs; its files
# are unpacked without installing it. curl fetches the optional RDS CA bundle.
COPY scripts/debian-packages.txt scripts/
RUN set -eu; \
    pkgs=$(sed -n '/^# build$/,/^$/p' scripts/debian-packages.txt | sed -e 's/#.*//' \
           | awk 'NF && $1 != "clang" && $1 != "node-llhttp" { print $1 }'); \
    case " $(echo $pkgs) " in *" gcc "*) ;; *) echo "no build section in debian-packages.txt" >&2; exit 1 ;; esac; \
    apt-get update -qq; \
    apt-get install -y -qq --no-install-recommends $pkgs curl >/dev/null; \
    cd /tmp; \
    apt-get download -qq node-llhttp; \
    dpkg-deb -x node-llhttp_*.deb /; \
    rm -f node-llhttp_*.deb; \
    rm -rf /var/lib/apt/lists/*

# The RDS CA bundle, for DB_SSLMODE=verify-full (docs/SECURITY.md). It cannot
# be shipped in the repository or fetched on a machine without the internet,
# so the deploy pipeline passes its URL (scripts/deploy.sh does); without
# one the image has no bundle and the task uses DB_SSLMODE=require.
ARG RDS_CA_BUNDLE_URL=
ARG RDS_CA_BUNDLE_SHA256=
RUN set -eu; \
    mkdir -p /out/certs; \
    if [ -n "$RDS_CA_BUNDLE_URL" ]; then \
        curl -fsSL --proto '=https' --retry 3 -o /out/certs/rds-global-bundle.pem "$RDS_CA_BUNDLE_URL"; \
        if [ -n "$RDS_CA_BUNDLE_SHA256" ]; then \
            echo "$RDS_CA_BUNDLE_SHA256  /out/certs/rds-global-bundle.pem" | sha256sum -c -; \
        fi; \
        n=$(openssl crl2pkcs7 -nocrl -certfile /out/certs/rds-global-bundle.pem \
            | openssl pkcs7 -print_certs -noout | grep -c '^subject='); \
        echo "RDS CA bundle: $n certificates"; \
        [ "$n" -gt 0 ]; \
        chmod 644 /out/certs/rds-global-bundle.pem; \
    fi

COPY Makefile VERSION ./
COPY scripts/embed-migrations.sh scripts/embed-docs.sh scripts/
COPY app/src app/src
COPY app/migrations app/migrations
COPY app/docs app/docs
# The context has no .git: the version comes in as an argument
# (scripts/image.sh and scripts/deploy.sh pass VERSION+commit).
ARG KILN_VERSION=
# build/kiln keeps its symbols here (for a core file or a backtrace, take
# it from this stage: buildah bud --target build); the image gets a
# stripped copy.
RUN make -j"$(nproc)" build/kiln ${KILN_VERSION:+VERSION_STR="$KILN_VERSION"} \
    && build/kiln version \
    && strip -o /out/kiln build/kiln \
    && make -s print-dlopen-libs > /out/dlopen-libs

# -------------------------------------------------------------- rootfs --
# The final image's whole filesystem, assembled in /rootfs: one COPY puts
# it into the scratch stage below as one layer. Debian's runtime packages
# of the libraries build/kiln uses, with the security updates of the base;
# test_image.py checks this list against the libraries build/kiln links and
# the ones app/src/core/dl.h names for dlopen().
FROM ${BASE} AS rootfs
RUN set -eu; \
    export DEBIAN_FRONTEND=noninteractive; \
    apt-get update -qq; \
    apt-get upgrade -y -qq >/dev/null; \
    apt-get install -y -qq --no-install-recommends \
        libuv1 libssl3 libjansson4 libpq5 libsqlite3-0 libhiredis0.14 libcurl4 \
        libexpat1 libargon2-1 libcbor0.8 libqrencode4 ca-certificates libcap2-bin >/dev/null; \
    rm -rf /var/lib/apt/lists/*; \
    groupadd --system --gid 10001 kiln; \
    useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin kiln

COPY --from=build /out/kiln /rootfs/usr/local/bin/kiln
COPY --from=build /out/certs/ /rootfs/etc/kiln/
COPY --from=build /out/dlopen-libs /tmp/dlopen-libs

# The shared objects: what the dynamic loader resolves for the binary, plus
# the closures of the libraries Kiln loads with dlopen() rather than links
# (libpq, libcurl, SQLite: `make print-dlopen-libs`, read from
# app/src/core/dl.h; ldd of the binary alone would miss them), and
# the loader itself. Each one at its real path with its soname link, and
# the merged-/usr links (/lib, /lib64) that the binary's interpreter path
# goes through. No ld.so.cache: the loader searches Debian's multiarch
# directories by default, dlopen() too. /usr/share/doc (the packages'
# copyright files) stays out (docs/OPERATIONS.md says where to find them).
#
# PORT below 1024 as uid 10001 (the original's task definitions say
# PORT=443): the file capability cap_net_bind_service, permitted only (+p,
# no effective bit). Kiln raises it for the listeners' bind and drops it
# right after (app/src/core/caps.h). Not +ep: with the effective bit, execve
# fails (EPERM, the task never starts) wherever the container's bounding set
# lacks it, and ECS task definitions that drop ALL capabilities (Kiln's own,
# which listens on 8443) are common; with +p the binary starts everywhere
# and only a low PORT needs NET_BIND_SERVICE kept (Docker's and Fargate's
# default set has it). Nothing for the operator to set, no sysctl. Set here
# on /rootfs: the scratch stage has no setcap to run. buildah's COPY --from
# keeps the security.capability attribute (and owners and modes), which
# scripts/image.sh's smoke test checks in the built image.
#
# Last, the assembled tree runs: `kiln version` in a chroot of /rootfs, and
# the loader lists the dlopen()ed libraries' dependencies there, so a
# missing library fails the build, not the task.
RUN set -eu; \
    R=/rootfs; \
    dlopened=; \
    for so in $(cat /tmp/dlopen-libs); do \
        p=$(ldconfig -p | awk -v so="$so" '$1 == so { print $NF; exit }'); \
        [ -n "$p" ] || { echo "no $so in ldconfig's cache" >&2; exit 1; }; \
        dlopened="$dlopened $p"; \
    done; \
    for f in $R/usr/local/bin/kiln $dlopened; do ldd "$f"; done > /tmp/ldd.txt; \
    if grep 'not found' /tmp/ldd.txt >&2; then exit 1; fi; \
    libs=$( (echo "$dlopened" | tr ' ' '\n'; \
             awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }' /tmp/ldd.txt) \
           | sort -u); \
    for p in $libs; do \
        link=$(realpath "$(dirname "$p")")/$(basename "$p"); real=$(realpath "$p"); \
        cp -a --parents "$link" $R/; \
        if [ "$real" != "$link" ]; then cp -a --parents "$real" $R/; fi; \
    done; \
    for d in lib lib64 lib32 libx32; do \
        if [ -L /$d ] && [ -d $R/usr/$d ]; then cp -a /$d $R/$d; fi; \
    done; \
    mkdir -p $R/etc/ssl/certs; \
    cp /etc/ssl/certs/ca-certificates.crt $R/etc/ssl/certs/; \
    cp -a --parents /usr/lib/ssl/cert.pem /usr/lib/ssl/certs $R/; \
    grep -E '^(root|kiln):' /etc/passwd > $R/etc/passwd; \
    grep -E '^(root|kiln):' /etc/group > $R/etc/group; \
    printf 'passwd: files\ngroup: files\nhosts: files dns\n' > $R/etc/nsswitch.conf; \
    install -d -o 10001 -g 10001 -m 0750 $R/var/lib/kiln; \
    install -d -m 1777 $R/tmp; \
    rmdir --ignore-fail-on-non-empty $R/etc/kiln; \
    rm /tmp/dlopen-libs; \
    setcap cap_net_bind_service=+p $R/usr/local/bin/kiln; \
    getcap $R/usr/local/bin/kiln | grep -q 'cap_net_bind_service=p$'; \
    chroot $R /usr/local/bin/kiln version; \
    interp=$(ldd $R/usr/local/bin/kiln | awk '$1 ~ /^\// { print $1 }'); \
    for p in $dlopened; do \
        chroot $R "$interp" --list "$p" > /tmp/list.txt; \
        if grep 'not found' /tmp/list.txt >&2; then exit 1; fi; \
    done; \
    echo "rootfs: $(find $R ! -type d | wc -l) files, $(du -sb $R | cut -f1) bytes"; \
    (cd $R && find . ! -type d -printf '%s\t%p\n' | sort -k2)

# -------------------------------------------------------------- runtime --
FROM scratch
ARG KILN_VERSION=
LABEL org.opencontainers.image.title="kiln" \
      org.opencontainers.image.description="Kiln JSON API server" \
      org.opencontainers.image.version="${KILN_VERSION}"

COPY --from=rootfs /rootfs/ /

# Production defaults; the ECS task definition adds the rest (database,
# Valkey, secrets by ARN, TRUSTED_PROXY_HOPS=1, PUBLIC_URL). HTTPS with a
# certificate made in memory: the ALB encrypts to its targets without
# verifying them, so there is no certificate file to ship or rotate.
# DB_PATH matters only without PostgreSQL (SQLite): with a read-only root
# filesystem, mount a volume on /var/lib/kiln. With PostgreSQL Kiln writes
# no file at all.
ENV PORT=8443 \
    BIND_ADDRESS=0.0.0.0 \
    SSL_SELF_SIGNED=true \
    KILN_ENV=production \
    DB_PATH=/var/lib/kiln/kiln.db

WORKDIR /var/lib/kiln
USER 10001:10001
EXPOSE 8443
STOPSIGNAL SIGTERM
# Docker's and buildah's (docker format); ECS ignores it and runs the
# healthCheck of the task definition, which should be the same command.
HEALTHCHECK --interval=15s --timeout=5s --start-period=15s --retries=3 \
    CMD ["/usr/local/bin/kiln", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/kiln"]
CMD ["serve"]
