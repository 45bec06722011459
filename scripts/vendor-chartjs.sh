#!/usr/bin/env bash
# Vendor Chart.js (MIT) into the pages' static files, so the charts need no CDN (users may be
# air-gapped). Fetches the pinned version from the npm registry with `npm pack`, checks the
# tarball's and the bundle's sha256 against the pins below, and copies the UMD bundle and its
# licence. To move to another version: change VERSION, run with UPDATE=1 to print the new
# sums, review the upstream changes, then pin the sums here and in the vendored README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION="4.6.1"
TARBALL_SHA256="9345dacdf4bb4c5d40321f4b9aafab6fe676d37a534fc0bc2d17c4c4e29c4f00"
BUNDLE_SHA256="87364cc2b2a76a6684929e7d6b80b18a897794db38400caff1fcf1791c6925d2"
LICENSE_SHA256="41a84aa2caba645f966a18d9c2056b73e6d3a81d80bc0046bc0011a2634d4cce"
DEST="services/projections/pages/static/vendor/chartjs"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "chart.js@${VERSION}" >/dev/null)
tarball="$work/chart.js-${VERSION}.tgz"
tar -xzf "$tarball" -C "$work"

check() {  # check FILE EXPECTED
  local actual
  actual="$(sha256sum "$1" | cut -d' ' -f1)"
  if [ "${UPDATE:-0}" = 1 ]; then
    echo "$(basename "$1") sha256 $actual"
  elif [ "$actual" != "$2" ]; then
    echo "sha256 mismatch for $(basename "$1"): got $actual, pinned $2" >&2
    exit 1
  fi
}
check "$tarball" "$TARBALL_SHA256"
check "$work/package/dist/chart.umd.min.js" "$BUNDLE_SHA256"
check "$work/package/LICENSE.md" "$LICENSE_SHA256"
[ "${UPDATE:-0}" = 1 ] && exit 0

mkdir -p "$DEST"
cp "$work/package/dist/chart.umd.min.js" "$DEST/chart.umd.min.js"
cp "$work/package/LICENSE.md" "$DEST/LICENSE.md"
echo "Chart.js ${VERSION} vendored into ${DEST} (sha256 checked)"
