#!/usr/bin/env bash
# A Debian sid root with CPython 3.14 and 3.15 (and their test suites), for
# the 3.14/3.15 test runs. Made once with debootstrap and cached.
#
# usage: sid-root.sh ensure ROOT     make ROOT unless it is complete already
#        sid-root.sh mount ROOT      bind /proc, /dev, /dev/pts, /dev/shm in
#        sid-root.sh umount ROOT     undo mount (safe to call when not mounted)
#        sid-root.sh run ROOT CMD... run CMD inside ROOT (mounted already)
#
# Needs root (debootstrap, mount, chroot). The source tree is never mounted
# into the root: callers copy it in (see sync), so deleting ROOT after umount
# cannot reach outside it.
set -euo pipefail

PACKAGES=python3.14-dev,python3.14-venv,libpython3.14-testsuite,\
python3.15-dev,python3.15-venv,libpython3.15-testsuite,gcc,libc6-dev,make
MIRROR=${SID_MIRROR:-http://deb.debian.org/debian}
BINDS=(proc dev dev/pts dev/shm)

cmd=$1 root=$2
shift 2

is_mounted() {
    # usage: is_mounted PATH -- exact match against the mount table.
    local path
    path=$(realpath -m "$1")
    awk -v p="$path" '$2 == p { found = 1 } END { exit !found }' /proc/self/mounts
}

do_umount() {
    local i
    # Reverse order: dev/pts and dev/shm before dev.
    for ((i = ${#BINDS[@]} - 1; i >= 0; i--)); do
        if is_mounted "$root/${BINDS[$i]}"; then
            umount "$root/${BINDS[$i]}" || umount -l "$root/${BINDS[$i]}"
        fi
    done
}

case $cmd in
ensure)
    if [ -f "$root/.evpy-root-complete" ]; then
        exit 0
    fi
    command -v debootstrap >/dev/null || {
        apt-get update -qq && apt-get install -y -qq debootstrap >/dev/null
    }
    # A half-made root from an interrupted run: start over (after making
    # sure nothing of the host is still mounted inside it).
    for r in "$root" "$root.tmp"; do
        for m in $(awk -v p="$(realpath -m "$r")/" \
                'index($2, p) == 1 { print $2 }' /proc/self/mounts | sort -r); do
            umount "$m" || umount -l "$m"
        done
        rm -rf --one-file-system "$r"
    done
    mkdir -p "$(dirname "$root")"
    debootstrap --variant=minbase --include="$PACKAGES" sid "$root.tmp" "$MIRROR"
    mv "$root.tmp" "$root"
    mkdir -p "$root/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    cp -L /etc/resolv.conf "$root/etc/resolv.conf"
    chroot "$root" python3.14 --version
    chroot "$root" python3.15 --version
    touch "$root/.evpy-root-complete"
    ;;
mount)
    for b in "${BINDS[@]}"; do
        mkdir -p "$root/$b"
        is_mounted "$root/$b" || mount --bind "/$b" "$root/$b"
    done
    # Refreshed on every use: the host's may change between runs.
    mkdir -p "$root/etc/ssl/certs"
    cp /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"
    cp -L /etc/resolv.conf "$root/etc/resolv.conf"
    ;;
umount)
    do_umount
    ;;
run)
    exec chroot "$root" /usr/bin/env -i HOME=/root LANG=C.UTF-8 \
        PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin "$@"
    ;;
*)
    echo "unknown command: $cmd" >&2
    exit 2
    ;;
esac
