#!/usr/bin/env bash
# Build the clinic-gateway Debian package with cargo-deb.
#
#   packaging/build-deb.sh                 release package  -> target/debian/
#   packaging/build-deb.sh --profile dev   debug-build package -> target/debian/dev/
#
# --profile dev reuses the target/debug build that `cargo build`/`cargo test`
# already made, so tests don't pay for a second (LTO) release build. cargo-deb
# rewrites the target/release/ asset paths in Cargo.toml to the profile's
# directory. cargo-deb 3.x prints a warning that the dev profile is
# unsupported for releases; that is expected here — never ship that package.
#
# cargo-deb is installed at the pinned version below if `cargo deb --version`
# does not already report it. Build output goes to stderr; the last line on
# stdout is the path of the .deb.
set -euo pipefail

CARGO_DEB_VERSION=3.8.0

usage() {
    echo "usage: $0 [--profile PROFILE]   (PROFILE: release (default), dev, or a custom cargo profile)" >&2
}

profile=release
while [ $# -gt 0 ]; do
    case "$1" in
        --profile)
            [ $# -ge 2 ] || { usage; exit 2; }
            profile=$2
            shift 2
            ;;
        --profile=*)
            profile=${1#--profile=}
            shift
            ;;
        -h|--help)
            usage
            exit 0
            ;;
        *)
            echo "build-deb: unknown argument: $1" >&2
            usage
            exit 2
            ;;
    esac
done
[ -n "$profile" ] || { usage; exit 2; }

cd "$(dirname "$0")/.."

if [ "$(cargo deb --version 2>/dev/null || true)" != "cargo-deb $CARGO_DEB_VERSION" ]; then
    echo "build-deb: installing cargo-deb $CARGO_DEB_VERSION" >&2
    cargo install cargo-deb --version "$CARGO_DEB_VERSION" --locked >&2
fi

args=()
outdir=target/debian
if [ "$profile" != release ]; then
    # --fast: lighter compression; xz on the 140 MB unstripped debug binary
    # is ~10 s of the ~13 s otherwise.
    args+=(--profile "$profile" --fast)
    # Keep non-release packages apart so they never overwrite (or get mistaken
    # for) the release .deb, which has the same file name.
    outdir=target/debian/$profile
fi
mkdir -p "$outdir"

# cargo-deb builds the binary itself (cargo build --profile ...) and prints
# the written package path on stdout; progress and warnings go to stderr.
deb=$(cargo deb "${args[@]}" --output "$outdir/" | tail -n 1)

case "$deb" in
    /*|'') ;;
    *) deb=$PWD/$deb ;;  # absolute, so callers in any cwd can use it
esac
if [ -z "$deb" ] || [ ! -f "$deb" ]; then
    echo "build-deb: cargo deb did not report a package file (got: '$deb')" >&2
    exit 1
fi
echo "$deb"
