# Kiln's container image: a build stage that compiles build/kiln with
# Debian's toolchain, and a slim runtime stage with only the shared
# libraries it links, a non-root user and nothing else.
#
#   make image                    buildah, from a local debootstrapped base
#                                 (scripts/image.sh; no registry needed)
#   scripts/deploy.sh             linux/arm64 for ECS Fargate, pushed to ECR
#   docker build -t kiln .        anywhere Docker Hub is reachable
#
# Nothing here names an architecture: the same file builds amd64 and arm64
# (buildah bud --platform linux/arm64, docker buildx --platform ...).
#
# BASE is any Debian 12 (bookworm) image with apt sources configured: the
# official debian:bookworm-slim by default, localhost/kiln-base:bookworm
# when scripts/image.sh made one with debootstrap.
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
RUN make -j"$(nproc)" build/kiln ${KILN_VERSION:+VERSION_STR="$KILN_VERSION"} \
    && build/kiln version

# -------------------------------------------------------------- runtime --
FROM ${BASE}
ARG KILN_VERSION=
LABEL org.opencontainers.image.title="kiln" \
      org.opencontainers.image.description="Kiln JSON API server" \
      org.opencontainers.image.version="${KILN_VERSION}"

# Only the shared libraries build/kiln links (the black-box suite's
# test_image.py checks this list against the binary), the CA store for
# HTTPS to AWS and OIDC providers, and the security updates of the base.
RUN set -eu; \
    export DEBIAN_FRONTEND=noninteractive; \
    apt-get update -qq; \
    apt-get upgrade -y -qq >/dev/null; \
    apt-get install -y -qq --no-install-recommends \
        libuv1 libssl3 libjansson4 libpq5 libsqlite3-0 libhiredis0.14 libcurl4 \
        libexpat1 ca-certificates libcap2-bin >/dev/null; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/* /var/cache/apt/*.bin /var/log/apt /var/log/dpkg.log; \
    groupadd --system --gid 10001 kiln; \
    useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin kiln; \
    install -d -o 10001 -g 10001 -m 0750 /var/lib/kiln

COPY --from=build /src/build/kiln /usr/local/bin/kiln
COPY --from=build /out/certs/ /etc/kiln/
# PORT below 1024 as uid 10001 (the original's task definitions say
# PORT=443): the file capability cap_net_bind_service, permitted only (+p,
# no effective bit). Kiln raises it for the listeners' bind and drops it
# right after (app/src/core/caps.h). Not +ep: with the effective bit, execve
# fails (EPERM, the task never starts) wherever the container's bounding set
# lacks it, and ECS task definitions that drop ALL capabilities (Kiln's own,
# which listens on 8443) are common; with +p the binary starts everywhere
# and only a low PORT needs NET_BIND_SERVICE kept (Docker's and Fargate's
# default set has it). Nothing for the operator to set, no sysctl.
# Set here, not in the build stage: some builders' COPY --from drops the
# security.capability attribute (BuildKit). setcap comes and goes in this
# one step; `kiln version` fails the build if a library is missing from the
# list above.
RUN set -eu; \
    setcap cap_net_bind_service=+p /usr/local/bin/kiln; \
    getcap /usr/local/bin/kiln | grep -q 'cap_net_bind_service=p$'; \
    apt-get purge -y -qq --auto-remove libcap2-bin >/dev/null; \
    rm -rf /var/log/apt /var/log/dpkg.log /var/cache/apt/*.bin; \
    /usr/local/bin/kiln version

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
