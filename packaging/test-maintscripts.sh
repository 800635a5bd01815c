#!/usr/bin/env bash
# Runs the package's maintainer scripts (install, re-configure, remove, purge)
# inside a private mount namespace in which /etc, /var/lib, /var/log,
# /usr/lib/systemd/system and /run/systemd are throwaway copies/tmpfs, so the
# real system gets no user, no unit symlinks and no state. Needs root and
# unshare(1) (util-linux).
#
#   packaging/test-maintscripts.sh PACKAGE.deb
#
# Called by packaging/test-deb.sh; exits non-zero with a message on failure.
set -euo pipefail

die() { echo "test-maintscripts: FAIL: $*" >&2; exit 1; }

[ $# -eq 1 ] || die "usage: $0 PACKAGE.deb"
deb=$(readlink -f "$1")
[ -f "$deb" ] || die "no such package: $1"
self=$(readlink -f "$0")

if [ "${CG_MAINT_SANDBOX:-}" != inner ]; then
    [ "$(id -u)" -eq 0 ] || die "needs root (runs adduser inside a private mount namespace)"
    command -v unshare >/dev/null 2>&1 || die "unshare (util-linux) not found"
    sandbox=$(mktemp -d)
    trap 'rm -rf "$sandbox"' EXIT
    rc=0
    CG_MAINT_SANDBOX=inner CG_MAINT_DIR=$sandbox \
        unshare --mount --propagation private "$self" "$deb" || rc=$?
    exit "$rc"
fi

# ---- inside the private mount namespace from here on ----------------------
S=${CG_MAINT_DIR:?}
[ "$(readlink /proc/self/ns/mnt)" != "$(readlink /proc/$PPID/ns/mnt)" ] \
    || die "not in a private mount namespace; refusing to touch /etc"

mkdir -p "$S/etc" "$S/varlib/dpkg" "$S/varlog" "$S/units" "$S/pkg" "$S/control"
cp -a /etc/. "$S/etc/"
cp -a /usr/lib/systemd/system/. "$S/units/"
dpkg-deb -x "$deb" "$S/pkg"
dpkg-deb -e "$deb" "$S/control"
marker=.clinic-gateway-maint-sandbox
touch "$S/etc/$marker"

mount --bind /var/lib/dpkg "$S/varlib/dpkg"          # dpkg-statoverride reads it
mount -o remount,bind,ro "$S/varlib/dpkg"
mount --bind "$S/etc" /etc
mount --rbind "$S/varlib" /var/lib
mount --bind "$S/varlog" /var/log
mount --bind "$S/units" /usr/lib/systemd/system
# Hide a running systemd (a developer's host): no daemon-reload/try-restart.
if [ -d /run/systemd ]; then mount -t tmpfs tmpfs /run/systemd; fi
[ -e "/etc/$marker" ] || die "sandbox /etc not in place"

# "Unpack": the files dpkg would place that the scripts rely on.
cp -a "$S/pkg/etc/clinic-gateway" /etc/
cp "$S/pkg/usr/lib/systemd/system/clinic-gateway.service" /usr/lib/systemd/system/

run() {  # run a maintainer script the way dpkg does
    local script=$1; shift
    [ -x "$S/control/$script" ] || die "$script missing or not executable"
    # deb-systemd-helper refuses to act unless these (set by dpkg) are present.
    DPKG_MAINTSCRIPT_PACKAGE=clinic-gateway DPKG_MAINTSCRIPT_NAME=$script \
    DPKG_MAINTSCRIPT_ARCH=$(dpkg --print-architecture) DPKG_ROOT= \
    DPKG_ADMINDIR=/var/lib/dpkg \
        "$S/control/$script" "$@" >"$S/$script.log" 2>&1 \
        || { cat "$S/$script.log" >&2; die "$script $* exited non-zero"; }
    sed "s/^/  $script $*: /" "$S/$script.log" >&2
}
user_ok() {
    local entry
    entry=$(getent passwd clinic-gateway) || die "user clinic-gateway missing after $1"
    [ "$(echo "$entry" | cut -d: -f6)" = /var/lib/clinic-gateway ] || die "wrong home after $1: $entry"
    [ "$(echo "$entry" | cut -d: -f3)" -lt 1000 ] || die "not a system uid after $1: $entry"
    getent group clinic-gateway >/dev/null || die "group clinic-gateway missing after $1"
    id -nG clinic-gateway | tr ' ' '\n' | grep -qx dialout || die "clinic-gateway not in dialout after $1"
}
conf_ok() {
    [ "$(stat -c '%U:%G %a' /etc/clinic-gateway/gateway.toml)" = "root:clinic-gateway 640" ] \
        || die "gateway.toml is $(stat -c '%U:%G %a' /etc/clinic-gateway/gateway.toml) after $1, want root:clinic-gateway 640"
}
wants=/etc/systemd/system/multi-user.target.wants/clinic-gateway.service

getent passwd clinic-gateway >/dev/null && die "sandbox already has a clinic-gateway user"

run postinst configure                       # first install
user_ok "first configure"; conf_ok "first configure"
[ -L "$wants" ] || die "unit not enabled after first configure ($wants missing)"
[ ! -e /var/lib/clinic-gateway ] || die "postinst created the state dir (systemd's StateDirectory= does that)"

run postinst configure 0.1.0-1               # upgrade / re-configure: idempotent
user_ok "re-configure"; conf_ok "re-configure"

mkdir -p /var/lib/clinic-gateway && touch /var/lib/clinic-gateway/journal.sqlite3
run prerm remove
run postrm remove
[ -e /var/lib/clinic-gateway/journal.sqlite3 ] || die "remove deleted the state directory"
user_ok "remove"
run postrm purge
[ ! -e /var/lib/clinic-gateway ] || die "purge left /var/lib/clinic-gateway"
[ ! -e "$wants" ] || die "purge left $wants"
user_ok "purge (Debian policy keeps the system user)"

echo "test-maintscripts: install, re-configure, remove and purge behaved" >&2
