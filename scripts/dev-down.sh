#!/usr/bin/env bash
# Stop what scripts/dev-up.sh started (by the servers' own pid files and
# pg_ctl, never by name). The data stays for the next dev-up unless
# --purge.
#
#   scripts/dev-down.sh [--purge] [DIR]    DIR: default build/dev
set -euo pipefail
cd "$(dirname "$0")/.."
prog=dev-down
log() { printf '%s: %s\n' "$prog" "$*" >&2; }
usage() { awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0" >&2; exit 2; }

purge=false
dir=
while [ $# -gt 0 ]; do
    case $1 in
        --purge) purge=true; shift ;;
        -h|--help) usage ;;
        -*) usage ;;
        *) [ -z "$dir" ] || usage; dir=$1; shift ;;
    esac
done
dir=${dir:-${KILN_DEV_DIR:-build/dev}}
if [ ! -d "$dir" ]; then
    log "nothing to stop: no $dir"
    exit 0
fi
dir=$(cd "$dir" && pwd -P)

scripts/test-services.sh stop "$dir"
rm -f "$dir/dev.env"
if $purge; then
    rm -rf "$dir"
    log "stopped; $dir removed"
else
    log "stopped; data kept in $dir (scripts/dev-up.sh starts it again, --purge removes it)"
fi
