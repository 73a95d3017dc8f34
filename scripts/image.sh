#!/usr/bin/env bash
# Build Kiln's container image with buildah from a Debian base made here
# with debootstrap (no container registry needed), then smoke-test it.
#
#   scripts/image.sh [options] [STEP...]     STEPs: base build smoke
#                                            (default: all three, in order)
#     --arch LIST      amd64, arm64 or both (default: amd64,arm64; repeatable);
#                      the host's natively, the other under qemu-user
#     --tag TAG        image tag (default: VERSION-<commit>, e.g. 0.1.0-c2bd88e)
#     --name NAME      image name (default: localhost/kiln)
#     --refresh-base   debootstrap again even if build/image/ has a base
#     -h, --help
#
#   The host's architecture keeps the plain names; a foreign one gets an
#   -ARCH suffix (on amd64: build/image/bookworm-minbase-arm64.tar,
#   localhost/kiln-base:bookworm-arm64, NAME:TAG-arm64, NAME:latest-arm64).
#
#   base   debootstrap --variant=minbase bookworm (--arch ARCH; a foreign
#          one runs under qemu-user-static through binfmt_misc, which this
#          script registers when missing) into a temporary folder, add apt
#          sources (main, updates, security) and the slim images' dpkg
#          excludes, cache it as build/image/bookworm-minbase.tar, and
#          import it as localhost/kiln-base:bookworm (skipped when the
#          tarball and the image exist already, or the image alone: a
#          second run reuses them)
#   build  buildah bud --isolation chroot --format docker --layers
#          --platform linux/ARCH with BASE=localhost/kiln-base:bookworm:
#          NAME:TAG and NAME:latest. The base is for the build and staging
#          stages only: the image itself is FROM scratch.
#   smoke  the image has no shell: only the kiln binary (and the dynamic
#          loader) run inside (buildah run --isolation chroot), the rest is
#          looked at from the host through `buildah mount`. Its files are
#          only the expected ones (binary, shared objects, CA store, passwd,
#          group, nsswitch.conf, /var/lib/kiln and /tmp), and the loader
#          resolves every dependency of the libraries Kiln dlopens (make
#          print-dlopen-libs: libpq, libcurl, SQLite) inside it. On the host's architecture:
#          `kiln version`; `kiln migrate` then `kiln serve` as the image's
#          user (uid 10001, production, HTTPS with SSL_SELF_SIGNED, SQLite
#          in /var/lib/kiln); `kiln healthcheck` inside, and
#          GET /healthz?detailed=true from outside (chroot isolation shares
#          the host's network and processes); then SIGTERM must end it with
#          status 0, and nothing may have been written outside
#          /var/lib/kiln and /tmp (what a read-only root filesystem needs);
#          then PORT=443 as uid 10001 (the original's task definitions):
#          the binary carries cap_net_bind_service=p (getcap from the host)
#          and `kiln serve` answers GET https://127.0.0.1:443/livez (needs
#          port 443 free on the host's loopback). On a foreign one, under
#          qemu: `kiln version` and `kiln migrate`. Prints OK or FAIL per
#          architecture, what each library family costs, and the sizes:
#            image: linux/amd64 X MB (Y MB compressed), linux/arm64 ...;
#            goal <= 30 MB uncompressed: PASS (or MISS, and fails)
#          (MB = 10^6 bytes; uncompressed = the layer tar, compressed = its
#          gzip as a registry serves it, what a pull transfers).
#
# Environment: DEBIAN_MIRROR (http://deb.debian.org/debian),
# DEBIAN_SECURITY_MIRROR (http://deb.debian.org/debian-security), SUITE
# (bookworm). Runs as root (debootstrap, buildah's storage, binfmt_misc);
# installs the Debian packages buildah and debootstrap, and for a foreign
# architecture qemu-user-static and binfmt-support, when they are missing.
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
name=localhost/kiln
tag=
refresh_base=false
steps=()
arches=()
host_arch=$(dpkg --print-architecture 2>/dev/null || echo amd64)

while [ $# -gt 0 ]; do
    case $1 in
        --tag) [ $# -ge 2 ] || usage; tag=$2; shift 2 ;;
        --name) [ $# -ge 2 ] || usage; name=$2; shift 2 ;;
        --refresh-base) refresh_base=true; shift ;;
        --arch) [ $# -ge 2 ] || usage; IFS=', ' read -r -a more <<<"$2"; arches+=("${more[@]}"); shift 2 ;;
        -h|--help) usage ;;
        base|build|smoke) steps+=("$1"); shift ;;
        *) usage ;;
    esac
done
[ ${#steps[@]} -gt 0 ] || steps=(base build smoke)
[ ${#arches[@]} -gt 0 ] || arches=(amd64 arm64)
for a in "${arches[@]}"; do
    case $a in amd64|arm64) ;; *) die "--arch $a: amd64 or arm64" ;; esac
done

version=$(tr -d '[:space:]' < VERSION)
commit=$(git rev-parse --short HEAD 2>/dev/null || true)
if [ -z "$tag" ]; then
    tag=$version${commit:+-$commit}
fi
# The version the binary reports: the Makefile's form (VERSION+commit).
kiln_version=$version${commit:++$commit}

# Per architecture: the host's keeps the plain names (build/image/bookworm-
# minbase.tar, localhost/kiln-base:bookworm, NAME:TAG and NAME:latest), a
# foreign one (built under qemu-user emulation) gets an -ARCH suffix.
sfx() { [ "$1" = "$host_arch" ] || printf -- '-%s' "$1"; }
base_tar_of() { echo "$cache/$SUITE-minbase$(sfx "$1").tar"; }
base_image_of() { echo "localhost/kiln-base:$SUITE$(sfx "$1")"; }
image_of() { echo "$name:$tag$(sfx "$1")"; }
latest_of() { echo "$name:latest$(sfx "$1")"; }
qemu_of() { case $1 in amd64) echo x86_64 ;; arm64) echo aarch64 ;; esac; }

[ "$(id -u)" = 0 ] || die "run as root (debootstrap and buildah's storage need it)"

now() { date +%s%N; }
ms_since() { echo $(( ($(now) - $1) / 1000000 )); }
secs() { printf '%d.%01d s' $(( $1 / 1000 )) $(( $1 % 1000 / 100 )); }

foreign_arches() {
    local a
    for a in "${arches[@]}"; do [ "$a" = "$host_arch" ] || echo "$a"; done
}

need_tools() {
    local missing=() t a q
    for t in buildah debootstrap; do
        command -v "$t" >/dev/null 2>&1 || missing+=("$t")
    done
    if [ -n "$(foreign_arches)" ]; then
        # RUN steps of a foreign architecture's build run under qemu-user
        command -v qemu-aarch64-static >/dev/null 2>&1 || missing+=(qemu-user-static)
        command -v update-binfmts >/dev/null 2>&1 || missing+=(binfmt-support)
    fi
    if [ ${#missing[@]} -gt 0 ]; then
        log "installing Debian packages: ${missing[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    fi
    # Register the qemu handlers with the kernel (binfmt_misc): a container
    # or a machine without systemd-binfmt has none after the install.
    for a in $(foreign_arches); do
        q=$(qemu_of "$a")
        [ -e "/proc/sys/fs/binfmt_misc/qemu-$q" ] && continue
        [ -e /proc/sys/fs/binfmt_misc/register ] ||
            mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc ||
            die "cannot mount binfmt_misc: $a cannot be built on this $host_arch machine"
        update-binfmts --enable "qemu-$q" >/dev/null 2>&1 || true
        [ -e "/proc/sys/fs/binfmt_misc/qemu-$q" ] ||
            die "no binfmt_misc handler qemu-$q after update-binfmts --enable: $a cannot be built here"
        log "registered the binfmt_misc handler qemu-$q (for linux/$a)"
    done
}

image_exists() { buildah inspect --type image "$1" >/dev/null 2>&1; }

# ----------------------------------------------------------------- base --

make_base_tar() {
    local arch=$1 base_tar root dlog
    base_tar=$(base_tar_of "$arch")
    dlog=$cache/debootstrap$(sfx "$arch").log
    mkdir -p "$cache"
    root=$(mktemp -d "$cache/rootfs.XXXXXX")
    # shellcheck disable=SC2064
    trap "rm -rf '$root'" EXIT
    if [ "$arch" = "$host_arch" ]; then
        log "debootstrap --variant=minbase $SUITE from $DEBIAN_MIRROR (a minute or two)"
    else
        log "debootstrap --arch=$arch --variant=minbase $SUITE from $DEBIAN_MIRROR (under qemu: several minutes)"
    fi
    if ! debootstrap --arch="$arch" --variant=minbase "$SUITE" "$root" "$DEBIAN_MIRROR" >"$dlog" 2>&1; then
        tail -n 20 "$dlog" >&2
        die "debootstrap failed (log: $dlog)"
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
    local a
    for a in "${arches[@]}"; do base_one "$a"; done
}

base_one() {
    local arch=$1 t0 sum have ctr mnt base_tar base_image
    base_tar=$(base_tar_of "$arch")
    base_image=$(base_image_of "$arch")
    t0=$(now)
    if $refresh_base; then rm -f "$base_tar"; fi
    if [ -s "$base_tar" ]; then
        log "base: reusing $base_tar"
    elif ! $refresh_base && image_exists "$base_image" &&
         [ "$(buildah inspect --type image --format '{{.OCIv1.Architecture}}' "$base_image")" = "$arch" ]; then
        # The image is what the build uses; the tarball only seeds it.
        log "base: no $base_tar, reusing the image $base_image (--refresh-base: debootstrap again)"
        return 0
    else
        make_base_tar "$arch"
    fi
    sum=$(sha256sum "$base_tar" | cut -c1-64)
    have=$(buildah inspect --type image --format '{{index .ImageAnnotations "kiln.base.sha256"}}' \
           "$base_image" 2>/dev/null || true)
    if [ "$have" = "$sum" ]; then
        log "base: $base_image is up to date"
    else
        log "base: importing $base_tar as $base_image (linux/$arch)"
        ctr=$(buildah from --quiet scratch)
        mnt=$(buildah mount "$ctr")
        tar --numeric-owner --xattrs -xpf "$base_tar" -C "$mnt"
        buildah umount "$ctr" >/dev/null
        buildah config --os linux --arch "$arch" \
            --env PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
            --cmd /bin/bash --annotation "kiln.base.sha256=$sum" \
            --label "org.opencontainers.image.description=Debian $SUITE minbase (debootstrap)" "$ctr"
        buildah commit --quiet --rm "$ctr" "$base_image" >/dev/null
    fi
    log "base: linux/$arch done in $(secs "$(ms_since "$t0")")"
}

# ---------------------------------------------------------------- build --

step_build() {
    local a
    for a in "${arches[@]}"; do build_one "$a"; done
}

build_one() {
    local arch=$1 t0 base_image image blog how
    base_image=$(base_image_of "$arch")
    image=$(image_of "$arch")
    blog=$cache/build$(sfx "$arch").log
    t0=$(now)
    image_exists "$base_image" || die "no $base_image: run '$0 --arch $arch base' first"
    how=native
    [ "$arch" = "$host_arch" ] || how="qemu-user emulation, several minutes"
    log "build: $image for linux/$arch ($how; buildah bud --isolation chroot, BASE=$base_image)"
    buildah bud --isolation chroot --format docker --layers --pull=never --platform "linux/$arch" \
        --build-arg "BASE=$base_image" --build-arg "KILN_VERSION=$kiln_version" \
        -t "$image" -t "$(latest_of "$arch")" -f Dockerfile . >"$blog" 2>&1 || {
        tail -n 40 "$blog" >&2
        die "buildah bud failed for linux/$arch (log: $blog)"
    }
    log "build: linux/$arch done in $(secs "$(ms_since "$t0")") (log: $blog)"
}

# ---------------------------------------------------------------- smoke --

free_port() {
    /usr/bin/python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# The image has no shell: everything below runs only /usr/local/bin/kiln
# (or the dynamic loader) inside, and looks at the filesystem from the host
# through `buildah mount`.
crun() { buildah run --isolation chroot "$@"; }

# The pid of `kiln serve` among the descendants of a `buildah run` (chroot
# isolation runs it in the host's view of processes); empty until it runs.
serve_pid() {
    local root=$1 p kids
    kids=$(ps -o pid= --ppid "$root" 2>/dev/null || true)
    for p in $kids; do
        if [ "$({ tr '\0' ' ' <"/proc/$p/cmdline"; } 2>/dev/null || true)" = "/usr/local/bin/kiln serve " ]; then
            echo "$p"; return 0
        fi
        serve_pid "$p" && return 0
    done
    return 1
}

# Start `kiln serve` in the container with the given env (--env ...); sets
# runpid (the buildah run) and kpid (kiln). Its output goes to $1.
serve_start() {
    local log=$1; shift
    crun "$@" -- /usr/local/bin/kiln serve >"$log" 2>&1 &
    runpid=$!
    kpid=
    for _ in $(seq 100); do
        kpid=$(serve_pid "$runpid") && break
        kill -0 "$runpid" 2>/dev/null || break
        sleep 0.1
    done
}

# SIGTERM to kiln (as ECS and Docker send it); the status of `buildah run`
# is kiln's. Sets serve_rc.
serve_stop() {
    serve_rc=0
    if [ -n "$kpid" ]; then kill -TERM "$kpid" 2>/dev/null || true; fi
    wait "$runpid" || serve_rc=$?
}

# Every file in the image is one of these, or the smoke test fails: the
# binary, shared objects and the loader, the CA store, passwd/group/
# nsswitch.conf, the optional RDS bundle, and the folders /var/lib/kiln and
# /tmp (empty). No shell, no package manager, no documentation.
check_contents() {
    local mnt=$1 extra
    extra=$(cd "$mnt" || exit 1; find . -mindepth 1 ! -type d | sed 's|^\.||' | grep -Ev \
        -e '^/usr/local/bin/kiln$' \
        -e '^/usr/lib(64)?/([a-z0-9_]+-linux-gnu/)?(lib[A-Za-z0-9_.+-]+\.so[0-9.]*|ld-linux[a-z0-9_-]*\.so\.[0-9]+)$' \
        -e '^/(lib|lib64|lib32|libx32)$' \
        -e '^/etc/(passwd|group|nsswitch\.conf|ssl/certs/ca-certificates\.crt)$' \
        -e '^/usr/lib/ssl/(cert\.pem|certs)$' \
        -e '^/etc/kiln/rds-global-bundle\.pem$' || true)
    extra+=$(cd "$mnt" || exit 1; find . -mindepth 1 -type d -empty | sed 's|^\.||' |
             grep -Ev '^/(var/lib/kiln|tmp|proc|sys|dev|run|etc)$' || true)
    if [ -n "$extra" ]; then
        log "smoke: FAIL: unexpected files in the image: ${extra//$'\n'/ }"
        return 1
    fi
    if [ "$(stat -c '%u:%g %a' "$mnt/var/lib/kiln")" != "10001:10001 750" ] ||
       [ "$(stat -c '%u:%g %a' "$mnt/tmp")" != "0:0 1777" ] ||
       [ "$(grep -c '^kiln:x:10001:10001:' "$mnt/etc/passwd")" != 1 ] ||
       [ "$(grep -c '^kiln:x:10001:' "$mnt/etc/group")" != 1 ]; then
        log "smoke: FAIL: /var/lib/kiln, /tmp or the kiln user is not as it should be"
        return 1
    fi
    log "smoke: contents: $(cd "$mnt" && find . ! -type d | wc -l) files, all expected (no shell, no package manager)"
}

# The dynamic loader of the image lists the dependencies of the libraries
# Kiln may dlopen (`make print-dlopen-libs`) inside it: none may be missing.
check_dlopen_closure() {
    local ctr=$1 mnt=$2 interp so p out rc=0
    interp=$(readelf -l "$mnt/usr/local/bin/kiln" | sed -n 's/.*interpreter: \(.*\)]/\1/p')
    for so in $(make -s --no-print-directory print-dlopen-libs); do
        p=$(cd "$mnt" && find ./usr/lib -name "$so" | sed 's|^\.||' | head -n 1)
        if [ -z "$p" ]; then
            log "smoke: FAIL: no $so in the image"; rc=1; continue
        fi
        if ! out=$(crun "$ctr" -- "$interp" --list "$p" 2>&1) || grep -q 'not found' <<<"$out"; then
            log "smoke: FAIL: $interp --list $p: $(grep 'not found' <<<"$out" | tr -s ' \t\n' ' ')"
            rc=1
        else
            log "smoke: $so and its $(grep -c '=>' <<<"$out") dependencies resolve inside the image"
        fi
    done
    return $rc
}

step_smoke() {
    local a rc=0
    for a in "${arches[@]}"; do
        if [ "$a" = "$host_arch" ]; then smoke_native "$a" || rc=1
        else smoke_foreign "$a" || rc=1
        fi
    done
    report_sizes || rc=1
    return $rc
}

# A foreign architecture, under qemu: the binary runs (`kiln version`,
# `kiln migrate` on SQLite), the libraries resolve, the contents are right.
smoke_foreign() {
    local arch=$1 image ctr mnt ver rc=0 t0
    t0=$(now)
    image=$(image_of "$arch")
    image_exists "$image" || die "no image $image: run '$0 --arch $arch build' first"
    ctr=$(buildah from --quiet --pull=never --platform "linux/$arch" "$image")
    # shellcheck disable=SC2064
    trap "buildah rm '$ctr' >/dev/null 2>&1 || true" EXIT
    mnt=$(buildah mount "$ctr")
    check_contents "$mnt" || rc=1   # before buildah run adds its /etc files
    ver=$(crun "$ctr" -- /usr/local/bin/kiln version 2>&1) || { echo "$ver" >&2; rc=1; }
    log "smoke: linux/$arch (qemu): kiln version: $ver"
    if crun --env "SECRET_KEY_BASE=$(openssl rand -hex 48)" "$ctr" -- /usr/local/bin/kiln migrate \
            >"$cache/smoke$(sfx "$arch").log" 2>&1; then
        log "smoke: linux/$arch (qemu): kiln migrate: ok"
    else
        log "smoke: FAIL: linux/$arch (qemu): kiln migrate (log: $cache/smoke$(sfx "$arch").log)"; rc=1
    fi
    check_dlopen_closure "$ctr" "$mnt" || rc=1
    buildah umount "$ctr" >/dev/null 2>&1 || true
    buildah rm "$ctr" >/dev/null 2>&1 || true
    trap - EXIT
    log "smoke: linux/$arch done in $(secs "$(ms_since "$t0")")"
    [ $rc = 0 ] && echo "image: OK $image (linux/$arch, under qemu: version, migrate, libraries)" ||
        echo "image: FAIL $image (linux/$arch)"
    return $rc
}

smoke_native() {
    local arch=$1 image t0 ctr port key out ver rc=0 mnt marker written user env maps
    t0=$(now)
    image=$(image_of "$arch")
    image_exists "$image" || die "no image $image: run '$0 build' first"
    ctr=$(buildah from --quiet --pull=never --platform "linux/$arch" "$image")
    # shellcheck disable=SC2064
    trap "buildah rm '$ctr' >/dev/null 2>&1 || true" EXIT
    mnt=$(buildah mount "$ctr")

    # 1. the image holds nothing else (checked before the first buildah run,
    # which adds its own /etc/hosts, /etc/resolv.conf and /etc/hostname);
    # the binary runs, as the image's user
    check_contents "$mnt" || rc=1
    ver=$(crun "$ctr" -- /usr/local/bin/kiln version 2>&1) || { echo "$ver" >&2; rc=1; }
    log "smoke: kiln version: $ver"
    user=$(buildah inspect --type image --format '{{.Docker.Config.User}}' "$image")
    if [ "$user" != 10001:10001 ]; then
        log "smoke: FAIL: the image's user is '$user', not 10001:10001"; rc=1
    fi
    check_dlopen_closure "$ctr" "$mnt" || rc=1

    # 2. a served request: production, HTTPS (self-signed), SQLite in the
    # image's /var/lib/kiln (writable by kiln only). Chroot isolation shares
    # the host's network, so the port is a free one on loopback.
    port=$(free_port)
    key=$(openssl rand -hex 48)
    env=(--env "PORT=$port" --env BIND_ADDRESS=127.0.0.1 --env "SECRET_KEY_BASE=$key"
         --env HTTP_LOOPS=1 --env DB_POOL_SIZE=2)
    out=$cache/smoke.log
    marker=$(mktemp)
    sleep 1   # file times have a second's resolution on some file systems
    if ! crun "${env[@]}" "$ctr" -- /usr/local/bin/kiln migrate >"$out" 2>&1; then
        log "smoke: FAIL: kiln migrate"; tail -n 20 "$out" >&2; rc=1
    fi
    serve_start "$cache/smoke-serve.log" "${env[@]}" "$ctr"
    if [ -z "$kpid" ]; then
        log "smoke: FAIL: kiln serve did not start"; tail -n 20 "$cache/smoke-serve.log" >&2; rc=1
    elif [ "$(awk '/^Uid:/ { print $2 }' "/proc/$kpid/status")" != 10001 ]; then
        log "smoke: FAIL: kiln serve does not run as uid 10001"; rc=1
    fi
    local hc=FAIL
    for _ in $(seq 50); do
        if crun "${env[@]}" "$ctr" -- /usr/local/bin/kiln healthcheck >/dev/null 2>&1; then hc=ok; break; fi
        sleep 0.1
    done
    log "smoke: kiln healthcheck (inside): $hc"
    [ $hc = ok ] || rc=1
    https_get "https://127.0.0.1:$port/healthz?detailed=true"
    log "smoke: GET https://127.0.0.1:$port/healthz?detailed=true: ${status:-no answer} $body"
    [ "$status" = 200 ] || rc=1
    if [ -n "$kpid" ]; then
        maps=$(awk '$6 ~ /\.so/ { n = split($6, p, "/"); print p[n] }' "/proc/$kpid/maps" | sort -u)
        log "smoke: kiln serve has $(wc -l <<<"$maps") shared objects mapped: $(tr '\n' ' ' <<<"$maps")"
    fi
    serve_stop
    log "smoke: kiln serve exit status after SIGTERM: $serve_rc"
    [ "$serve_rc" = 0 ] || { rc=1; tail -n 20 "$cache/smoke-serve.log" >&2; }
    # 3. a read-only root filesystem would do: the server wrote nothing but
    # its SQLite file in /var/lib/kiln (the volume) and /tmp. /run, /etc's
    # hosts/resolv.conf and /dev are buildah's: it mounts its own there.
    written=$(cd "$mnt" && find . -xdev -newer "$marker" ! -path ./run ! -path './var/lib/kiln*' \
              ! -path ./tmp ! -path './tmp/*' | sed 's|^\.||')
    rm -f "$marker"
    if [ -n "$written" ]; then
        log "smoke: FAIL: wrote outside /var/lib/kiln and /tmp (a read-only root would refuse): ${written//$'\n'/ }"
        rc=1
    else
        log "smoke: files written outside /var/lib/kiln and /tmp: none (read-only root filesystem ok)"
    fi
    smoke_port_443 "$ctr" "$mnt" "$key" || rc=1
    buildah umount "$ctr" >/dev/null 2>&1 || true
    buildah rm "$ctr" >/dev/null 2>&1 || true
    trap - EXIT

    log "smoke: linux/$arch done in $(secs "$(ms_since "$t0")")"
    if [ $rc = 0 ]; then
        echo "image: OK $image (linux/$arch)"
    else
        echo "image: FAIL $image (linux/$arch); logs: $cache/smoke*.log"
    fi
    return $rc
}

# PORT=443 as the image's user, uid 10001: what the original's task
# definitions ask for. The file capability (Dockerfile: set on the staging
# tree, carried into the scratch stage by COPY --from) makes it work; a
# kernel that lets anyone bind 443 (ip_unprivileged_port_start <= 443)
# would prove nothing, so the capability itself is checked too.
smoke_port_443() {
    local ctr=$1 mnt=$2 key=$3 rc=0 caps start
    caps=$(getcap "$mnt/usr/local/bin/kiln" 2>/dev/null | sed 's/^.* //')
    if [ "$caps" = cap_net_bind_service=p ]; then
        log "smoke: file capability of /usr/local/bin/kiln (kept by COPY --from into the scratch stage): $caps"
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
    serve_start "$cache/smoke-443.log" --env PORT=443 --env BIND_ADDRESS=127.0.0.1 \
        --env "SECRET_KEY_BASE=$key" --env HTTP_LOOPS=1 --env DB_POOL_SIZE=2 "$ctr"
    if [ -n "$kpid" ]; then
        log "smoke: uid $(awk '/^Uid:/ { print $2 }' "/proc/$kpid/status") serving on PORT=443"
    fi
    https_get "https://127.0.0.1:443/livez"
    log "smoke: GET https://127.0.0.1:443/livez as uid 10001: ${status:-no answer} $body"
    [ "$status" = 200 ] || rc=1
    serve_stop
    log "smoke: PORT=443 serve exit status after SIGTERM: $serve_rc"
    if [ "$serve_rc" != 0 ] || [ $rc != 0 ]; then
        rc=1; tail -n 20 "$cache/smoke-443.log" >&2
    fi
    return $rc
}

# ---------------------------------------------------------------- sizes --

# What each library family costs (bytes on disk of the regular files), from
# the mounted image; the families of docs/OPERATIONS.md's table.
family_of() {
    case $1 in
        kiln) echo "kiln (stripped)" ;;
        libssl.so*|libcrypto.so*) echo OpenSSL ;;
        libpq.so*) echo "libpq" ;;
        libgssapi_krb5*|libkrb5*|libk5crypto*|libcom_err*|libkeyutils*) echo "libpq: GSSAPI/Kerberos" ;;
        libldap*|liblber*|libsasl2*) echo "libpq: LDAP/SASL" ;;
        libgnutls*|libhogweed*|libnettle*|libgmp*|libp11-kit*|libtasn1*|libffi*) echo "libpq: LDAP's GnuTLS" ;;
        libcurl.so*) echo "libcurl" ;;
        libnghttp2*|librtmp*|libssh2*|libpsl*|libidn2*|libunistring*|libbrotli*|libzstd*|libz.so*)
            echo "libcurl: protocols, IDN, compression" ;;
        libsqlite3*) echo SQLite ;;
        libuv*) echo libuv ;;
        libjansson*|libhiredis*|libexpat*) echo "jansson, hiredis, expat" ;;
        libc.so*|libm.so*|libresolv*|ld-linux*|libpthread*|libdl.so*|librt.so*) echo glibc ;;
        *.crt|*.pem) echo "CA certificates" ;;
        *) echo "other (passwd, group, nsswitch.conf)" ;;
    esac
}

lib_table() {
    local mnt=$1
    (cd "$mnt" && find . -type f -printf '%s %f\n') | while read -r size f; do
        printf '%s\t%s\t%s\n' "$(family_of "$f")" "$size" "$f"
    done | awk -F'\t' '
        { sum[$1] += $2; total += $2; n[$1]++; files[$1] = files[$1] " " $3 }
        END {
            for (k in sum) printf "0 %12d  %-38s %10d bytes %6.2f MB  (%s)\n", -sum[k], k, sum[k], sum[k] / 1e6, substr(files[k], 2)
            printf "1 %12d  %-38s %10d bytes %6.2f MB\n", 0, "total", total, total / 1e6
        }' | sort -k1,1n -k2,2n | cut -c16-
}

# Uncompressed (the layer tar) and compressed (gzip, as a registry serves
# it: what a pull transfers) sizes of the image, in bytes.
image_bytes() {
    local image=$1 dir manifest layers raw=0 gz=0 l
    dir=$(mktemp -d)
    buildah push --quiet --compression-format gzip "$image" "oci:$dir:img" >/dev/null 2>&1 ||
        { rm -rf "$dir"; return 1; }
    manifest=$(jq -r '.manifests[0].digest' "$dir/index.json")
    layers=$(jq -r '.layers[].digest' "$dir/blobs/sha256/${manifest#sha256:}")
    for l in $layers; do
        gz=$(( gz + $(stat -c %s "$dir/blobs/sha256/${l#sha256:}") ))
        raw=$(( raw + $(gunzip -c "$dir/blobs/sha256/${l#sha256:}" | wc -c) ))
    done
    rm -rf "$dir"
    echo "$raw $gz"
}

mb() { awk -v b="$1" 'BEGIN { printf "%.1f MB", b / 1e6 }'; }

report_sizes() {
    local a image ctr mnt raw gz line="" ok=true goal=30000000
    for a in "${arches[@]}"; do
        image=$(image_of "$a")
        image_exists "$image" || continue
        ctr=$(buildah from --quiet --pull=never --platform "linux/$a" "$image")
        mnt=$(buildah mount "$ctr")
        log "sizes: linux/$a, bytes on disk per library family:"
        lib_table "$mnt" >&2
        buildah rm "$ctr" >/dev/null 2>&1 || true
        read -r raw gz < <(image_bytes "$image") || { log "sizes: cannot push $image to measure it"; ok=false; continue; }
        [ "$raw" -le $goal ] || ok=false
        line+="${line:+, }linux/$a $(mb "$raw") ($(mb "$gz") compressed)"
    done
    if $ok; then
        echo "image: $line; goal <= 30 MB uncompressed: PASS"
    else
        echo "image: $line; goal <= 30 MB uncompressed: MISS"
    fi
    $ok
}

# ----------------------------------------------------------------- main --

need_tools
mkdir -p "$cache"
t_all=$(now)
for s in "${steps[@]}"; do
    "step_$s" || exit 1
done
log "total: $(secs "$(ms_since "$t_all")")"
