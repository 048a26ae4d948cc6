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
    return
  fi
  echo "no cargo on PATH: installing Debian's cargo-web and rustc-web" >&2
  apt_need cargo-web rustc-web gcc libc6-dev
  command -v cargo >/dev/null 2>&1 || { echo "cargo-web did not provide cargo" >&2; exit 1; }
}
