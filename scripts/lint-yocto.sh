#!/usr/bin/env bash
# Lints the Yocto layer yocto/meta-tidelet without a Yocto build tree (a full bitbake build is
# not run here). In order:
#   1. the unit tests of the layer's helper scripts (yocto/tests);
#   2. scripts/yocto-crates.py --check: tidelet-crates.inc lists exactly Cargo.lock's crates;
#   3. scripts/yocto-sources.py: LIC_FILES_CHKSUM, the dist/ files do_install copies, the
#      units' ExecStart (binary, --config, a plugin's device-plugin directory writable in its
#      sandbox) and the packages (SYSTEMD_SERVICE, FILES, CONFFILES) of tidelet and its two
#      device plugins agree with the source tree;
#   4. `systemd-analyze verify` of every unit in dist/systemd (the ones the recipe installs),
#      against stand-in binaries at the ExecStart paths; any message fails but those in
#      VERIFY_ALLOWED, each with its reason;
#   5. oelint-adv (pinned, from PyPI, in a cached venv under target/) on every recipe, append
#      and conf file of the layer, against each Yocto release the layer declares compatible,
#      with the default rules plus the stricter `jetm` set, in `--mode all`. No rule is
#      suppressed globally; the few narrow `# nooelint:` comments in the layer give reasons.
# Exits non-zero on any failure or finding. Works on a fresh Debian 12 as root (installs
# python3-venv if the venv module is missing, systemd if systemd-analyze is); the venv is
# reused while the pins match.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/lib.sh

OELINT_VERSION=9.11.2
LAYER=yocto/meta-tidelet
VENV=target/yocto-lint/oelint-adv-$OELINT_VERSION
# Every package of the venv pinned, so a new release of a dependency cannot change the verdict.
REQUIREMENTS="anytree==2.13.0
argcomplete==3.7.2
colorama==0.4.6
Deprecated==1.3.1
oelint-adv==$OELINT_VERSION
oelint-data==1.5.26
oelint-parser==8.13.2
regex==2026.9.29
urllib3==2.8.0
wrapt==2.5.2"

step() { printf '\n== lint-yocto: %s\n' "$*"; }

PYTHON=${PYTHON:-python3}
command -v "$PYTHON" >/dev/null || { echo "lint-yocto: $PYTHON not found (Python >= 3.11 needed)" >&2; exit 1; }
"$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
  || { echo "lint-yocto: $PYTHON is $("$PYTHON" --version 2>&1); tomllib needs Python >= 3.11" >&2; exit 1; }

# Every check runs even when an earlier one fails, so one run reports everything.
status=0
step "unit tests of the layer scripts"
"$PYTHON" -m unittest discover -s yocto/tests || status=1

step "crate list against Cargo.lock"
"$PYTHON" scripts/yocto-crates.py --check || status=1

step "recipe against the source tree"
"$PYTHON" scripts/yocto-sources.py || status=1

step "systemd units (systemd-analyze verify)"
# Messages systemd-analyze may print that are not findings, as extended regexps:
#   tidelet.service's DelegateSubgroup= is systemd 254's; Debian 12's systemd 252 does not know
#   it and ignores it, as the unit's comment explains.
VERIFY_ALLOWED=(
  "tidelet\.service:[0-9]+: Unknown key 'DelegateSubgroup' in section \[Service\], ignoring\."
)
verify_units() {
  local tmp units=() unit bin out line ok=0 allowed re
  if ! command -v systemd-analyze >/dev/null; then
    if [ "$(id -u)" != 0 ]; then
      echo "lint-yocto: systemd-analyze not found; install systemd (apt-get install systemd)" >&2
      return 1
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq systemd >/dev/null 2>&1 \
      || { apt-get update -qq && apt-get install -y -qq systemd >/dev/null; }
  fi
  tmp=$(mktemp -d)
  mkdir -p "$tmp/units"
  # verify checks that ExecStart's binary exists and is executable: point each ExecStart*= at
  # a stand-in with the same name under $tmp (the units are otherwise verified as written).
  for unit in dist/systemd/*.service; do
    while read -r bin; do
      mkdir -p "$tmp$(dirname "$bin")"
      printf '#!/bin/sh\n' >"$tmp$bin"
      chmod +x "$tmp$bin"
    done < <(sed -n 's/^Exec[A-Za-z]*=[-@:+!]*\(\/[^ ]*\).*/\1/p' "$unit")
    sed "s|^\(Exec[A-Za-z]*=[-@:+!]*\)/|\1$tmp/|" "$unit" >"$tmp/units/${unit##*/}"
    units+=("$tmp/units/${unit##*/}")
  done
  if ! out=$(systemd-analyze verify --man=no "${units[@]}" 2>&1); then ok=1; fi
  while IFS= read -r line; do
    [ -n "$line" ] || continue
    line=${line//$tmp\/units\//}
    allowed=0
    for re in "${VERIFY_ALLOWED[@]}"; do
      if [[ $line =~ $re ]]; then allowed=1; fi
    done
    if [ $allowed = 0 ]; then echo "lint-yocto: systemd-analyze verify: $line" >&2; ok=1; fi
  done <<<"$out"
  rm -rf "$tmp"
  if [ $ok = 0 ]; then
    echo "systemd-analyze verify ($(systemd-analyze --version | head -1)): ${#units[@]} units, no findings"
  fi
  return $ok
}
verify_units || status=1

step "oelint-adv $OELINT_VERSION"
pinned_venv lint-yocto "$VENV" "$REQUIREMENTS" || exit 1

mapfile -t FILES < <(find "$LAYER" \( -name '*.bb' -o -name '*.bbappend' -o -name '*.conf' \) | sort)
[ "${#FILES[@]}" -gt 0 ] || { echo "lint-yocto: no recipes found under $LAYER" >&2; exit 1; }
RELEASES=$(sed -n 's/^LAYERSERIES_COMPAT_tidelet = "\(.*\)"$/\1/p' "$LAYER/conf/layer.conf")
[ -n "$RELEASES" ] || { echo "lint-yocto: no LAYERSERIES_COMPAT_tidelet in $LAYER/conf/layer.conf" >&2; exit 1; }
for release in $RELEASES; do
  # oelint-adv exits non-zero when it reports anything, info-level findings included.
  if "$VENV/bin/oelint-adv" --quiet --relpaths --mode all --addrules jetm --jobs 2 \
      --release "$release" "${FILES[@]}"; then
    echo "oelint-adv --release $release: no findings in ${#FILES[@]} files"
  else
    echo "lint-yocto: oelint-adv --release $release reported the findings above" >&2
    status=1
  fi
done
if [ $status != 0 ]; then
  echo "lint-yocto: FAILED (see above)" >&2
else
  echo "lint-yocto: all checks passed"
fi
exit $status
