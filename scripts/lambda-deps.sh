#!/bin/sh
# What `make lambdas` needs beyond scripts/debian-packages.txt, from Debian's
# own archive, on demand (idempotent; quick when everything is there):
#
#   scripts/lambda-deps.sh ARCH SYSROOT [qemu]
#
# ARCH: the Lambda architecture (arm64 or x86_64). For the machine's own
# architecture nothing more is needed (python3 packs the zips) and SYSROOT is
# ignored. For the other one (as root):
#   * the cross compiler, gcc-<triplet> (not crossbuild-essential-<arch>: that
#     one pulls libc6-dev:<arch> into dpkg, see below);
#   * dpkg --add-architecture <arch> and apt-get update, so that apt knows the
#     :<arch> packages;
#   * the :<arch> -dev packages of the libraries kiln-rotate links, with every
#     run-time library they need, downloaded (apt-get download) and unpacked
#     into SYSROOT, a private sysroot under build/. They are not installed:
#     installing Multi-Arch: same packages for a second architecture forces
#     the machine's own copies to the exact same version (upgrading libssl3,
#     libpq5, postgresql-15 … under running services), and libpq-dev is not
#     co-installable at all (apt would remove libpq-dev:amd64).
#   * "qemu" adds qemu-user, which runs the foreign bootstrap (smoke test).
set -eu
arch=${1:?usage: scripts/lambda-deps.sh arm64|x86_64 SYSROOT [qemu]}
sysroot=${2:-}
with_qemu=${3:-}
case "$arch" in
    arm64|aarch64) deb=arm64; triplet=aarch64-linux-gnu ;;
    x86_64|amd64)  deb=amd64; triplet=x86_64-linux-gnu ;;
    *) echo "lambda-deps: unknown architecture $arch (arm64 or x86_64)" >&2; exit 2 ;;
esac
[ "$deb" = "$(dpkg --print-architecture)" ] && exit 0
[ -n "$sysroot" ] || { echo "lambda-deps: SYSROOT missing" >&2; exit 2; }

# The -dev packages of scripts/debian-packages.txt that kiln-rotate is
# compiled against (core/dl.h includes the accounts' libraries' headers too,
# although the rotation functions never load them).
dev="libc6-dev libuv1-dev libssl-dev libjansson-dev libpq-dev libsqlite3-dev libhiredis-dev
     libcurl4-openssl-dev libexpat1-dev libargon2-dev libcbor-dev libqrencode-dev"

installed() {
    dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"
}
need_root() {
    if [ "$(id -u)" -ne 0 ]; then
        echo "lambda-deps: $1; run as root" >&2
        exit 1
    fi
}

missing=""
installed "gcc-$triplet" || missing="$missing gcc-$triplet"
[ "$with_qemu" = qemu ] && { installed qemu-user || missing="$missing qemu-user"; }
if [ -n "$missing" ]; then
    need_root "missing Debian packages:$missing"
    echo "lambda-deps: installing:$missing"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # shellcheck disable=SC2086
    apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

stamp="$sysroot/.kiln-sysroot"
want=$(echo "$deb $dev" | tr -s ' \n' ' ')
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
    exit 0
fi
if ! dpkg --print-foreign-architectures | grep -qx "$deb"; then
    need_root "apt does not know the $deb packages yet (dpkg --add-architecture $deb)"
    dpkg --add-architecture "$deb"
    apt-get update -qq
elif ! apt-cache show "libpq-dev:$deb" >/dev/null 2>&1; then
    need_root "no $deb package lists (apt-get update)"
    apt-get update -qq
fi

# Every :<arch> package the -dev packages depend on, recursively (libc6,
# libcurl4's TLS, Kerberos, LDAP… libraries): what linking and running need.
# shellcheck disable=SC2046
pkgs=$(apt-cache depends --recurse --no-recommends --no-suggests --no-conflicts \
           --no-breaks --no-replaces --no-enhances $(for p in $dev; do printf '%s:%s ' "$p" "$deb"; done) |
       grep -v '^ ' | grep ":$deb\$" | sort -u)
echo "lambda-deps: unpacking $(echo "$pkgs" | wc -l) $deb packages into $sysroot"
# Unpacked in a temporary folder, and only what compiling and linking read
# is kept (headers, libraries, pkg-config files): the Makefile includes every
# *.d file under build/, and Debian's packages hold folders such as
# etc/ld.so.conf.d that must never appear there.
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
mkdir -p "$tmp/debs" "$tmp/root"
# shellcheck disable=SC2086
if ! (cd "$tmp/debs" && apt-get download -qq $pkgs >"$tmp/download.log" 2>&1); then
    cat "$tmp/download.log" >&2
    echo "lambda-deps: apt-get download failed" >&2
    exit 1
fi
for f in "$tmp"/debs/*.deb; do
    dpkg-deb -x "$f" "$tmp/root"
done
rm -rf "$sysroot"
mkdir -p "$sysroot/usr/lib" "$sysroot/usr/share"
mv "$tmp/root/lib" "$sysroot/lib"
mv "$tmp/root/usr/include" "$sysroot/usr/include"
mv "$tmp/root/usr/lib/$triplet" "$sysroot/usr/lib/$triplet"
[ -d "$tmp/root/usr/share/pkgconfig" ] && mv "$tmp/root/usr/share/pkgconfig" "$sysroot/usr/share/pkgconfig"
rm -rf "$sysroot/usr/lib/$triplet/gconv"
find "$sysroot" -name '*.d' -prune -exec rm -rf {} +
echo "$want" > "$stamp"
echo "lambda-deps: done"
