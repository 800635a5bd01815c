#!/usr/bin/env bash
# Package test: builds the .deb from the debug build (build-deb.sh --profile
# dev), lints it, and checks its contents and maintainer scripts.
# Nothing is installed on this machine (no dpkg -i; a dpkg --root install
# would need a full Debian root). The maintainer scripts are instead run by
# packaging/test-maintscripts.sh inside a private mount namespace whose /etc,
# /var/lib and unit directory are throwaway copies (root only; skipped else).
#
# Last line on success: "package: 1 passed, 0 failed"; on any failure the
# reason goes to stderr and the last line is "package: 0 passed, 1 failed".
set -euo pipefail

cd "$(dirname "$0")/.."

# Highest acceptable `systemd-analyze security` exposure (one decimal).
MAX_EXPOSURE=2.0

work=
finish() {
    local rc=$?
    [ -z "$work" ] || rm -rf "$work"
    if [ "$rc" -ne 0 ]; then
        echo "package: 0 passed, 1 failed"
    fi
    exit "$rc"
}
trap finish EXIT

fail() {
    echo "test-deb: FAIL: $*" >&2
    exit 1
}
step() {
    echo "test-deb: $*" >&2
}

# Tools: lintian and systemd-analyze come from Debian packages; install them
# when missing and we are root (a fresh machine), otherwise fail clearly.
need_tool() {
    local tool=$1 pkg=$2
    command -v "$tool" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        step "installing $pkg (for $tool)"
        DEBIAN_FRONTEND=noninteractive apt-get update -qq >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$pkg" >&2
    fi
    command -v "$tool" >/dev/null 2>&1 || fail "$tool not found (install the Debian package '$pkg')"
}
need_tool dpkg-deb dpkg
need_tool lintian lintian
need_tool systemd-analyze systemd

work=$(mktemp -d)

# --- unit file -----------------------------------------------------------------
unit=systemd/clinic-gateway.service
step "checking $unit"
# `verify` complains that /usr/bin/clinic-gateway does not exist on a build
# machine; that is the only complaint allowed.
verify_out=$(systemd-analyze verify "$unit" 2>&1 || true)
verify_rest=$(printf '%s\n' "$verify_out" | grep -v -e '^$' -e 'Command /usr/bin/clinic-gateway is not executable' || true)
[ -z "$verify_rest" ] || fail "systemd-analyze verify $unit:"$'\n'"$verify_rest"
systemd-analyze security --offline=yes --no-pager "$unit" >"$work/security.txt" 2>&1 \
    || fail "systemd-analyze security failed: $(tail -n 3 "$work/security.txt")"
exposure=$(sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p' "$work/security.txt")
[ -n "$exposure" ] || fail "could not read the exposure level from systemd-analyze security"
awk -v e="$exposure" -v m="$MAX_EXPOSURE" 'BEGIN { exit !(e <= m) }' \
    || fail "unit exposure $exposure is above $MAX_EXPOSURE"
step "unit exposure $exposure (max $MAX_EXPOSURE)"

# --- build ---------------------------------------------------------------------
step "building package (dev profile)"
deb=$(packaging/build-deb.sh --profile dev | tail -n 1) \
    || fail "packaging/build-deb.sh --profile dev failed (see its output above)"
[ -f "$deb" ] || fail "build-deb.sh did not produce a package (last line: '$deb')"
step "package: $deb"

# --- lintian -------------------------------------------------------------------
step "running lintian"
# Errors fail the test; warnings and info are shown for the log.
# (Lintian warns when run as root; that line is dropped.)
# TMPDIR: lintian leaves mldbm-elf-* scratch files behind; keep them in $work.
if ! TMPDIR=$work lintian --fail-on error --display-info "$deb" >"$work/lintian.txt" 2>&1; then
    cat "$work/lintian.txt" >&2
    fail "lintian reported errors"
fi
grep -v 'running with root privileges' "$work/lintian.txt" >&2 || true

# --- contents ------------------------------------------------------------------
dpkg-deb -c "$deb" >"$work/contents.txt" || fail "dpkg-deb -c failed"
has_file() {
    # $1: path without leading "./"; optional $2: expected mode string
    local line
    line=$(awk -v p="./$1" '$6 == p { print; exit }' "$work/contents.txt")
    [ -n "$line" ] || return 1
    [ -z "${2:-}" ] || [ "${line%% *}" = "$2" ]
}
has_file usr/bin/clinic-gateway -rwxr-xr-x \
    || fail "usr/bin/clinic-gateway missing or not mode 755"
has_file etc/clinic-gateway/gateway.toml -rw-r----- \
    || fail "etc/clinic-gateway/gateway.toml missing or not mode 640"
has_file usr/share/doc/clinic-gateway/README.md || fail "README.md not in /usr/share/doc/clinic-gateway"
has_file usr/share/doc/clinic-gateway/ARCHITECTURE.md || fail "ARCHITECTURE.md not in /usr/share/doc/clinic-gateway"
has_file usr/share/doc/clinic-gateway/copyright || fail "copyright file missing"
unit_in_pkg=
for p in usr/lib/systemd/system/clinic-gateway.service lib/systemd/system/clinic-gateway.service; do
    if has_file "$p"; then unit_in_pkg=$p; break; fi
done
[ -n "$unit_in_pkg" ] || fail "clinic-gateway.service not under (usr/)lib/systemd/system"

dpkg-deb -x "$deb" "$work/root"
cmp -s "$work/root/$unit_in_pkg" "$unit" || fail "packaged unit differs from $unit"
"$work/root/usr/bin/clinic-gateway" --help >/dev/null 2>&1 \
    || fail "packaged /usr/bin/clinic-gateway --help does not run"

# --- control -------------------------------------------------------------------
dpkg-deb -I "$deb" conffiles >"$work/conffiles" 2>/dev/null || fail "package has no conffiles"
grep -qx '/etc/clinic-gateway/gateway.toml' "$work/conffiles" \
    || fail "/etc/clinic-gateway/gateway.toml is not a conffile"
dpkg-deb -f "$deb" Depends | grep -qw adduser || fail "Depends lacks adduser"

for script in postinst postrm; do
    dpkg-deb -I "$deb" "$script" >"$work/$script" 2>/dev/null || fail "package has no $script"
    sh -n "$work/$script" || fail "$script is not valid sh"
    ! grep -q '#DEBHELPER#' "$work/$script" || fail "$script still contains #DEBHELPER#"
done
grep -Eq '^[[:space:]]*adduser --system --group --home "?(\$SVC_HOME|/var/lib/clinic-gateway)"? --no-create-home' "$work/postinst" \
    || fail "postinst lacks the adduser --system line"
grep -q 'deb-systemd-helper enable clinic-gateway.service' "$work/postinst" \
    || fail "postinst does not enable clinic-gateway.service"
if grep -q 'deb-systemd-invoke start' "$work/postinst"; then
    fail "postinst starts the service on first install (start = false expected)"
fi
grep -q 'deb-systemd-helper purge clinic-gateway.service' "$work/postrm" \
    || fail "postrm does not purge the unit's enablement state"
if grep -Eq '(deluser|userdel|delgroup|groupdel)' "$work/postrm"; then
    fail "postrm removes the system user/group (Debian policy: keep it)"
fi

# --- maintainer scripts, run for real in a throwaway mount namespace ---------
if [ "$(id -u)" -eq 0 ] && command -v unshare >/dev/null 2>&1 \
        && unshare --mount --propagation private true 2>/dev/null; then
    step "running maintainer scripts in a private mount namespace"
    packaging/test-maintscripts.sh "$deb" || fail "maintainer scripts misbehaved"
else
    step "SKIP maintainer-script run (needs root and mount namespaces)"
fi

echo "package: 1 passed, 0 failed"
