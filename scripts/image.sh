#!/usr/bin/env bash
# Build Kiln's container image with buildah from a Debian base made here
# with debootstrap (no container registry needed), then smoke-test it.
#
#   scripts/image.sh [options] [STEP...]     STEPs: base build smoke
#                                            (default: all three, in order)
#     --tag TAG        image tag (default: VERSION-<commit>, e.g. 0.1.0-c2bd88e)
#     --name NAME      image name (default: localhost/kiln)
#     --refresh-base   debootstrap again even if build/image/ has a base
#     -h, --help
#
#   base   debootstrap --variant=minbase bookworm into a temporary folder,
#          add apt sources (main, updates, security) and the slim images'
#          dpkg excludes, cache it as build/image/bookworm-minbase.tar, and
#          import it as localhost/kiln-base:bookworm (skipped when the
#          tarball and the image exist already: a second run reuses them)
#   build  buildah bud --isolation chroot --format docker --layers with
#          BASE=localhost/kiln-base:bookworm: NAME:TAG and NAME:latest
#   smoke  in a container of NAME:TAG (buildah run --isolation chroot):
#          `kiln version`; `kiln migrate` then `kiln serve` as the image's
#          user (uid 10001, production, HTTPS with SSL_SELF_SIGNED, SQLite
#          in /var/lib/kiln); `kiln healthcheck` inside, and
#          GET /healthz?detailed=true from outside (chroot isolation shares
#          the host's network); then SIGTERM must end it with status 0,
#          and nothing may have been written outside /var/lib/kiln and /tmp
#          (what a read-only root filesystem needs); then PORT=443 as uid
#          10001 (the original's task definitions): the binary carries
#          cap_net_bind_service=p (getcap from the host) and `kiln serve`
#          answers GET https://127.0.0.1:443/livez (needs port 443 free on
#          the host's loopback). Prints OK or FAIL, and the image's size.
#
# Environment: DEBIAN_MIRROR (http://deb.debian.org/debian),
# DEBIAN_SECURITY_MIRROR (http://deb.debian.org/debian-security), SUITE
# (bookworm). Runs as root (debootstrap, buildah's storage); installs the
# Debian packages buildah and debootstrap when they are missing.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
trap 'printf "image: error: unexpected failure at line %s (status %s)\n" "$LINENO" "$?" >&2' ERR

prog=image
# GET an HTTPS URL of the container (self-signed), retrying for up to 10 s
# while it starts: sets status (the HTTP code, empty when nothing answered)
# and body.
https_get() {
    local out=
    for _ in $(seq 100); do
        if out=$(curl -sk --max-time 2 -w '\n%{http_code}' "$1" 2>/dev/null); then
            break
        fi
        out=
        sleep 0.1
    done
    status=${out##*$'\n'}
    body=${out%$'\n'*}
}

log() { printf '%s: %s\n' "$prog" "$*" >&2; }
die() { printf '%s: error: %s\n' "$prog" "$*" >&2; exit 1; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }

SUITE=${SUITE:-bookworm}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
DEBIAN_SECURITY_MIRROR=${DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
cache=build/image
base_tar=$cache/$SUITE-minbase.tar
base_image=localhost/kiln-base:$SUITE
name=localhost/kiln
tag=
refresh_base=false
steps=()

while [ $# -gt 0 ]; do
    case $1 in
        --tag) [ $# -ge 2 ] || usage; tag=$2; shift 2 ;;
        --name) [ $# -ge 2 ] || usage; name=$2; shift 2 ;;
        --refresh-base) refresh_base=true; shift ;;
        -h|--help) usage ;;
        base|build|smoke) steps+=("$1"); shift ;;
        *) usage ;;
    esac
done
[ ${#steps[@]} -gt 0 ] || steps=(base build smoke)

version=$(tr -d '[:space:]' < VERSION)
commit=$(git rev-parse --short HEAD 2>/dev/null || true)
if [ -z "$tag" ]; then
    tag=$version${commit:+-$commit}
fi
# The version the binary reports: the Makefile's form (VERSION+commit).
kiln_version=$version${commit:++$commit}
image=$name:$tag

[ "$(id -u)" = 0 ] || die "run as root (debootstrap and buildah's storage need it)"

now() { date +%s%N; }
ms_since() { echo $(( ($(now) - $1) / 1000000 )); }
secs() { printf '%d.%01d s' $(( $1 / 1000 )) $(( $1 % 1000 / 100 )); }

need_tools() {
    local missing=() t
    for t in buildah debootstrap; do
        command -v "$t" >/dev/null 2>&1 || missing+=("$t")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    log "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

image_exists() { buildah inspect --type image "$1" >/dev/null 2>&1; }

# ----------------------------------------------------------------- base --

make_base_tar() {
    local root
    mkdir -p "$cache"
    root=$(mktemp -d "$cache/rootfs.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$root'" EXIT
    log "debootstrap --variant=minbase $SUITE from $DEBIAN_MIRROR (a minute or two)"
    if ! debootstrap --variant=minbase "$SUITE" "$root" "$DEBIAN_MIRROR" >"$cache/debootstrap.log" 2>&1; then
        tail -n 20 "$cache/debootstrap.log" >&2
        die "debootstrap failed (log: $cache/debootstrap.log)"
    fi
    # apt sources for the build stage's apt-get (debootstrap writes only the
    # main suite): main, updates and security, deb822 like Debian's images.
    rm -f "$root/etc/apt/sources.list"
    cat >"$root/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $DEBIAN_MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: $DEBIAN_SECURITY_MIRROR
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    # What Debian's -slim images leave out: documentation, manuals, locales.
    cat >"$root/etc/dpkg/dpkg.cfg.d/slim" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
path-exclude /usr/share/locale/*
EOF
    cat >"$root/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    echo 'Acquire::Languages "none";' >"$root/etc/apt/apt.conf.d/docker-no-languages"
    find "$root/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
    find "$root/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$root"/usr/share/man/* "$root"/usr/share/info/* "$root"/usr/share/locale/* \
           "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb \
           "$root"/var/cache/apt/*.bin "$root"/var/log/* "$root/etc/resolv.conf" \
           "$root/etc/hostname"
    : >"$root/etc/machine-id"
    tar --numeric-owner --xattrs -C "$root" -cf "$base_tar.tmp" .
    mv "$base_tar.tmp" "$base_tar"
    rm -rf "$root"
    trap - EXIT
}

step_base() {
    local t0 sum have ctr mnt
    t0=$(now)
    if $refresh_base; then rm -f "$base_tar"; fi
    if [ -s "$base_tar" ]; then
        log "base: reusing $base_tar"
    else
        make_base_tar
    fi
    sum=$(sha256sum "$base_tar" | cut -c1-64)
    have=$(buildah inspect --type image --format '{{index .ImageAnnotations "kiln.base.sha256"}}' \
           "$base_image" 2>/dev/null || true)
    if [ "$have" = "$sum" ]; then
        log "base: $base_image is up to date"
    else
        log "base: importing $base_tar as $base_image"
        ctr=$(buildah from --quiet scratch)
        mnt=$(buildah mount "$ctr")
        tar --numeric-owner --xattrs -xpf "$base_tar" -C "$mnt"
        buildah umount "$ctr" >/dev/null
        buildah config --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            --cmd /bin/bash --annotation "kiln.base.sha256=$sum" \
            --label "org.opencontainers.image.description=Debian $SUITE minbase (debootstrap)" "$ctr"
        buildah commit --quiet --rm "$ctr" "$base_image" >/dev/null
    fi
    log "base: done in $(secs "$(ms_since "$t0")")"
}

# ---------------------------------------------------------------- build --

step_build() {
    local t0
    t0=$(now)
    image_exists "$base_image" || die "no $base_image: run '$0 base' first"
    log "build: $image (buildah bud --isolation chroot, BASE=$base_image)"
    buildah bud --isolation chroot --format docker --layers --pull=never \
        --build-arg "BASE=$base_image" --build-arg "KILN_VERSION=$kiln_version" \
        -t "$image" -t "$name:latest" -f Dockerfile . >"$cache/build.log" 2>&1 || {
        tail -n 40 "$cache/build.log" >&2
        die "buildah bud failed (log: $cache/build.log)"
    }
    log "build: done in $(secs "$(ms_since "$t0")") (log: $cache/build.log)"
}

# ---------------------------------------------------------------- smoke --

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

step_smoke() {
    local t0 ctr port key out ver body runpid rc=0 status size mnt marker written
    t0=$(now)
    image_exists "$image" || die "no image $image: run '$0 build' first"
    ctr=$(buildah from --quiet --pull=never "$image")
    # shellcheck disable=SC2064
    trap "buildah rm '$ctr' >/dev/null 2>&1 || true" EXIT
    run() { buildah run --isolation chroot "$@"; }

    # 1. the binary runs, as the image's user
    ver=$(run "$ctr" -- /usr/local/bin/kiln version 2>&1) || { echo "$ver" >&2; rc=1; }
    log "smoke: kiln version: $ver"
    if [ "$(run "$ctr" -- /usr/bin/id -u 2>/dev/null)" != 10001 ]; then
        log "smoke: FAIL: the container does not run as uid 10001"; rc=1
    fi

    # 2. a served request: production, HTTPS (self-signed), SQLite in the
    # image's /var/lib/kiln (writable by kiln only). Chroot isolation shares
    # the host's network, so the port is a free one on loopback.
    port=$(free_port)
    key=$(openssl rand -hex 48)
    out=$cache/smoke.log
    marker=$(mktemp)
    sleep 1   # file times have a second's resolution on some file systems
    # shellcheck disable=SC2016  # expanded by the shell in the container
    run --env "PORT=$port" --env BIND_ADDRESS=127.0.0.1 --env "SECRET_KEY_BASE=$key" \
        --env HTTP_LOOPS=1 --env DB_POOL_SIZE=2 "$ctr" -- /bin/sh -c '
            /usr/local/bin/kiln migrate || exit 10
            /usr/local/bin/kiln serve & pid=$!
            ok=
            for i in $(seq 100); do
                if /usr/local/bin/kiln healthcheck 2>/dev/null; then ok=1; break; fi
                sleep 0.1
            done
            [ -n "$ok" ] && echo "smoke: kiln healthcheck: ok" || echo "smoke: kiln healthcheck: FAIL"
            # hold the server until the host has made its request
            for i in $(seq 150); do [ -e /tmp/smoke-done ] && break; sleep 0.1; done
            kill -TERM $pid; wait $pid; rc=$?
            echo "smoke: kiln serve exit status after SIGTERM: $rc"
            [ -n "$ok" ] && [ $rc = 0 ]' >"$out" 2>&1 &
    runpid=$!
    https_get "https://127.0.0.1:$port/healthz?detailed=true"
    log "smoke: GET https://127.0.0.1:$port/healthz?detailed=true: ${status:-no answer} $body"
    [ "$status" = 200 ] || rc=1
    # tell the shell inside to stop the server (its /tmp is the container's)
    mnt=$(buildah mount "$ctr")
    touch "$mnt/tmp/smoke-done"
    wait "$runpid" || rc=1
    # 3. a read-only root filesystem would do: the server wrote nothing but
    # its SQLite file in /var/lib/kiln (the volume) and /tmp (our marker).
    # /run is buildah's: it mounts its own files there.
    written=$(cd "$mnt" && find . -xdev -newer "$marker" ! -path ./run ! -path './var/lib/kiln*' \
              ! -path ./tmp ! -path './tmp/*' | sed 's|^\.||')
    rm -f "$marker"
    if [ -n "$written" ]; then
        log "smoke: FAIL: wrote outside /var/lib/kiln and /tmp (a read-only root would refuse): ${written//$'\n'/ }"
        rc=1
    else
        log "smoke: files written outside /var/lib/kiln and /tmp: none (read-only root filesystem ok)"
    fi
    grep '^smoke:' "$out" | sed "s/^smoke: /$prog: smoke: /" >&2 || true
    if [ $rc != 0 ]; then
        tail -n 20 "$out" >&2
    fi
    smoke_port_443 "$ctr" "$mnt" "$key" || rc=1
    buildah umount "$ctr" >/dev/null 2>&1 || true
    buildah rm "$ctr" >/dev/null 2>&1 || true
    trap - EXIT

    size=$(buildah images --format '{{.Size}}' "$image")
    size=${size%%$'\n'*}
    log "smoke: done in $(secs "$(ms_since "$t0")")"
    if [ $rc = 0 ]; then
        echo "image: OK $image ($size)"
    else
        echo "image: FAIL $image ($size); log: $out"
    fi
    return $rc
}

# PORT=443 as the image's user, uid 10001: what the original's task
# definitions ask for. The file capability (Dockerfile) makes it work; a
# kernel that lets anyone bind 443 (ip_unprivileged_port_start <= 443)
# would prove nothing, so the capability itself is checked too.
smoke_port_443() {
    local ctr=$1 mnt=$2 key=$3 rc=0 caps start out443 runpid body status
    caps=$(getcap "$mnt/usr/local/bin/kiln" 2>/dev/null | sed 's/^.* //')
    if [ "$caps" = cap_net_bind_service=p ]; then
        log "smoke: file capability of /usr/local/bin/kiln: $caps"
    else
        log "smoke: FAIL: /usr/local/bin/kiln has capabilities '${caps:-none}', want cap_net_bind_service=p"
        rc=1
    fi
    start=$(cat /proc/sys/net/ipv4/ip_unprivileged_port_start 2>/dev/null || echo 1024)
    if [ "$start" -le 443 ]; then
        log "smoke: note: this host lets any user bind port 443 (ip_unprivileged_port_start=$start): the serve below does not prove the capability"
    fi
    if (exec 3<>/dev/tcp/127.0.0.1/443) 2>/dev/null; then
        log "smoke: FAIL: cannot check PORT=443: something on this host listens on 127.0.0.1:443"
        return 1
    fi
    out443=$cache/smoke-443.log
    rm -f "$mnt/tmp/smoke443-done"
    # shellcheck disable=SC2016  # expanded by the shell in the container
    run --env PORT=443 --env BIND_ADDRESS=127.0.0.1 --env "SECRET_KEY_BASE=$key" \
        --env HTTP_LOOPS=1 --env DB_POOL_SIZE=2 "$ctr" -- /bin/sh -c '
            echo "smoke: uid $(id -u) serving on PORT=443"
            /usr/local/bin/kiln serve & pid=$!
            for i in $(seq 150); do [ -e /tmp/smoke443-done ] && break; sleep 0.1; done
            kill -TERM $pid; wait $pid; rc=$?
            echo "smoke: PORT=443 serve exit status after SIGTERM: $rc"
            [ $rc = 0 ]' >"$out443" 2>&1 &
    runpid=$!
    https_get "https://127.0.0.1:443/livez"
    log "smoke: GET https://127.0.0.1:443/livez as uid 10001: ${status:-no answer} $body"
    [ "$status" = 200 ] || rc=1
    touch "$mnt/tmp/smoke443-done"
    wait "$runpid" || rc=1
    grep '^smoke:' "$out443" | sed "s/^smoke: /$prog: smoke: /" >&2 || true
    if [ $rc != 0 ]; then
        tail -n 20 "$out443" >&2
    fi
    return $rc
}

# ----------------------------------------------------------------- main --

need_tools
mkdir -p "$cache"
t_all=$(now)
for s in "${steps[@]}"; do
    "step_$s" || exit 1
done
log "total: $(secs "$(ms_since "$t_all")")"
