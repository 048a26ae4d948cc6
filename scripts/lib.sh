# Shared by scripts/*.sh: set-up steps a fresh Debian 12 machine needs.

# apt-get install the named packages that are missing (one `apt-get update` first).
apt_need() {
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

# A Rust toolchain: the one on PATH (rustup's), else Debian 12's own current one
# (cargo-web/rustc-web 1.96 from bookworm-security; Debian's plain `cargo` is too old for
# tidelet's dependencies).
ensure_toolchain() {
  # rustup's toolchain (with rustfmt and clippy) wins when it is installed, even where PATH
  # was trimmed (a service, sudo's secure_path) and Debian's cargo-web is on it instead.
  local home=${HOME:-/root}
  if [ -x "$home/.cargo/bin/cargo" ]; then
    export PATH="$home/.cargo/bin:$PATH"
  fi
  if command -v cargo >/dev/null 2>&1; then
    pinned_toolchain
    return
  fi
  echo "no cargo on PATH: installing Debian's cargo-web and rustc-web" >&2
  apt_need cargo-web rustc-web gcc libc6-dev
  command -v cargo >/dev/null 2>&1 || { echo "cargo-web did not provide cargo" >&2; exit 1; }
}

# rust-toolchain.toml pins the version CI builds with. rustup downloads a pinned toolchain that
# is missing, which this machine's closed network refuses (rustup then panics). A machine whose
# rustup has that exact version as `stable` gets it under the pinned name too: a symlink in
# rustup's toolchain directory, as this kind of machine ships it (`rustup toolchain link`
# refuses names of official releases). Nothing is installed or updated.
pinned_toolchain() {
  command -v rustup >/dev/null 2>&1 || return 0
  local pin host dir stable
  pin=$(sed -n 's/^channel *= *"\(.*\)"$/\1/p' rust-toolchain.toml)
  [ -n "$pin" ] || { echo "rust-toolchain.toml: no channel" >&2; exit 1; }
  dir=$(rustup show home)/toolchains
  stable=$(cd "$dir" && ls -d stable-* 2>/dev/null | head -n1)
  [ -n "$stable" ] || return 0
  host=${stable#stable-}
  [ -e "$dir/$pin-$host" ] && return 0
  if [ "$("$dir/$stable/bin/rustc" --version | cut -d' ' -f2)" = "$pin" ]; then
    ln -s "$dir/$stable" "$dir/$pin-$host"
    echo "rust-toolchain.toml: rustup's stable is $pin; linked as $pin-$host" >&2
  else
    echo "rust-toolchain.toml pins $pin; rustup has $("$dir/$stable/bin/rustc" --version) as stable (rustup will try to download $pin)" >&2
  fi
}

# Make (or reuse) the Python venv VENV holding exactly REQUIREMENTS (pinned `name==version`
# lines), installed from PyPI without dependency resolution and then checked with `pip check`;
# reused while the pins match. As root it installs python3-venv where Debian's python3 lacks
# ensurepip. WHO names the caller in messages. pip's output goes to stderr.
pinned_venv() {
  local who=$1 venv=$2 requirements=$3 python=${PYTHON:-python3}
  command -v "$python" >/dev/null || { echo "$who: $python not found" >&2; return 1; }
  [ "$(cat "$venv/.requirements" 2>/dev/null)" != "$requirements" ] || return 0
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  if ! "$python" -m venv "$venv" >/dev/null 2>&1; then
    # Debian's python3 lacks ensurepip until python3-venv is installed.
    if [ "$(id -u)" != 0 ]; then
      echo "$who: '$python -m venv' failed; install python3-venv (apt-get install python3-venv)" >&2
      return 1
    fi
    rm -rf "$venv"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq python3-venv >/dev/null 2>&1 \
      || { apt-get update -qq && apt-get install -y -qq python3-venv >/dev/null; }
    "$python" -m venv "$venv"
  fi
  printf '%s\n' "$requirements" >"$venv/requirements.txt"
  "$venv/bin/pip" install --quiet --disable-pip-version-check --no-deps \
    -r "$venv/requirements.txt" >&2
  "$venv/bin/pip" check >/dev/null \
    || { "$venv/bin/pip" check >&2; echo "$who: pinned requirements are inconsistent" >&2; return 1; }
  printf '%s' "$requirements" >"$venv/.requirements"
}
