# shellcheck shell=bash
# Functions of scripts/cross-build.sh: set-up of Debian's Rust toolchain for ARM targets, the
# builds, the checks of the binaries and the unit tests under qemu-user. Sourced, not run.
#
# Why qemu's sysroot matters (the hang a first attempt ran into): glibc's dynamic loader and
# its libc.so.6 share private data (`_rtld_global`, GLIBC_PRIVATE symbols) whose layout may
# change between any two Debian builds of glibc, so both must come from the same package.
# With `qemu-aarch64-static -L /usr/aarch64-linux-gnu` qemu loads the loader of
# libc6-arm64-cross (2.36-8) but, as /usr/aarch64-linux-gnu/lib/aarch64-linux-gnu does not
# exist, the loader then finds libc.so.6 of libc6:arm64 (2.36-9+deb12uN, pulled in by
# libstd-rust-web-dev:arm64) in /lib/aarch64-linux-gnu. The mix runs single-threaded code but
# pthread_create never returns (the test harness hangs after "test ... " even with
# --test-threads 1; strace shows no clone at all). `-L /` uses libc6:arm64's own loader, so
# both halves match; `cross_check_loader` refuses to run tests when they would not.

DEBIAN_RUST=1.96.0+dfsg1-1~deb12u2
# Stripped size budget of each binary (issue 3: tidelet <= 8 MiB on aarch64).
CROSS_SIZE_BUDGET=${CROSS_SIZE_BUDGET:-$((8 * 1024 * 1024))}
CROSS_TEST_TIMEOUT=${CROSS_TEST_TIMEOUT:-600}
# What scripts/layout/linker did in the aarch64 release build (cross_layout_check reads it).
CROSS_LAYOUT_LOG=${CROSS_LAYOUT_LOG:-${TMPDIR:-/tmp}/tidelet-cross-layout.$$}

# Rust triple of a short target name.
cross_triple() {
  case "$1" in
    aarch64) echo aarch64-unknown-linux-gnu ;;
    armv7) echo armv7-unknown-linux-gnueabihf ;;
    *) echo "cross: unknown target '$1' (aarch64 or armv7)" >&2; return 1 ;;
  esac
}

# qemu-user binary and the sysroot (-L) whose loader and libc.so.6 belong together.
cross_qemu() {
  case "$1" in
    aarch64) echo "qemu-aarch64-static /" ;;
    armv7) echo "qemu-arm-static /usr/arm-linux-gnueabihf" ;;
  esac
}

# Prints the Debian packages (pinned where the version matters) a target needs.
cross_packages() {
  echo "rustc-web=$DEBIAN_RUST cargo-web=$DEBIAN_RUST libstd-rust-web-dev=$DEBIAN_RUST"
  echo "qemu-user-static file binutils"
  case "$1" in
    # lld: the release binaries are linked with their hot code together (scripts/layout/linker).
    aarch64) echo "libstd-rust-web-dev:arm64=$DEBIAN_RUST gcc-aarch64-linux-gnu libc6-dev-arm64-cross lld" ;;
    # rust-web-src: the sources of std, built by -Z build-std (same version as rustc).
    armv7) echo "rust-web-src=$DEBIAN_RUST gcc-arm-linux-gnueabihf libc6-dev-armhf-cross" ;;
  esac
}

# Installs what the targets need (one `apt-get update`, and only when something is missing or
# at another version) and selects the toolchain: sets the array CARGO.
cross_setup() {
  local t want=() missing=() spec name ver have
  for t in "$@"; do
    cross_triple "$t" >/dev/null
    # shellcheck disable=SC2207
    want+=($(cross_packages "$t"))
  done
  for spec in $(printf '%s\n' "${want[@]}" | sort -u); do
    name=${spec%%=*}
    ver=
    [ "$name" = "$spec" ] || ver=${spec#*=}
    # One line per installed architecture (with arm64 added, libstd-rust-web-dev has two):
    # without a qualifier, only the native or `all` one counts.
    have=$(dpkg-query -W -f='${Architecture} ${db:Status-Status} ${Version}\n' "$name" 2>/dev/null |
      awk -v q="$name" -v native="$(dpkg --print-architecture)" \
        'q ~ /:/ || $1 == native || $1 == "all" { print $2, $3; exit }' || true)
    if [ -z "$ver" ] && [ "${have%% *}" = installed ]; then continue; fi
    if [ -n "$ver" ] && [ "$have" = "installed $ver" ]; then continue; fi
    missing+=("$spec")
  done
  if [ ${#missing[@]} -gt 0 ]; then
    echo "== installing: ${missing[*]}"
    # arm64's std comes from Debian's arm64 archive. Never armhf: its index on the mirror is
    # broken and spoils `apt-get update`; armv7 builds its std from rust-web-src instead.
    if printf '%s\n' "${missing[@]}" | grep -q ':arm64'; then
      dpkg --print-foreign-architectures | grep -qx arm64 || dpkg --add-architecture arm64
    fi
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi

  # Debian's toolchain through rustup when rustup is there (`cargo +debian-web` makes every
  # rustc that cargo and build scripts start Debian's), without touching rustup's own
  # toolchains; else Debian's cargo and rustc directly.
  local rustup=
  if command -v rustup >/dev/null 2>&1; then rustup=rustup
  elif [ -x "${HOME:-/root}/.cargo/bin/rustup" ]; then rustup=${HOME:-/root}/.cargo/bin/rustup
  fi
  if [ -n "$rustup" ]; then
    "$rustup" toolchain list | grep -q '^debian-web' || "$rustup" toolchain link debian-web /usr
    CARGO=("$(dirname "$(command -v "$rustup")")/cargo" +debian-web)
  else
    export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
    CARGO=(/usr/bin/cargo)
  fi
  "${CARGO[@]}" --version
}

# Environment of cargo for target $1: linker, C compiler for build scripts that compile C,
# qemu runner with a timeout, and for armv7 the std built from source.
cross_env() {
  local t=$1 triple upper qemu prefix gcc
  triple=$(cross_triple "$t")
  upper=$(echo "$triple" | tr 'a-z-' 'A-Z_')
  read -r qemu prefix <<<"$(cross_qemu "$t")"
  case "$t" in
    aarch64) gcc=aarch64-linux-gnu-gcc ;;
    armv7) gcc=arm-linux-gnueabihf-gcc ;;
  esac
  export "CARGO_TARGET_${upper}_LINKER=$gcc" "CC_${triple//-/_}=$gcc"
  if [ "$t" = aarch64 ] && ! cross_quick "$t"; then
    # Through scripts/layout/linker, which gives the agent's fat-LTO link (and only that) lld
    # and the order of its hot functions, and writes what it did to CROSS_LAYOUT_LOG, which
    # cross_build checks. Its settings go in a wrapper of this target's own: exported, they
    # would reach the host's links too (build scripts, proc macros), which must use cc. The
    # wrapper is the same for every run (CI's unit-test job writes it too, at the same time);
    # the log, which is not, comes through the environment.
    # A cross gcc looks for `<triple>-ld.lld` on PATH, or `ld.lld` in its -B directories:
    # Debian's lld has neither name for it, hence the link in bin/ given with -B.
    local wrapper=$PWD/target/cross-linker/$t
    mkdir -p "${wrapper%/*}/bin"
    ln -sfn "$(command -v ld.lld)" "${wrapper%/*}/bin/ld.lld"
    printf '#!/bin/sh\nTIDELET_LINKER=%s TIDELET_LAYOUT_LLD=1 exec %s -B%s/ "$@"\n' \
      "$gcc" "$PWD/scripts/layout/linker" "${wrapper%/*}/bin" >"$wrapper.$BASHPID"
    # $BASHPID, not $$: the release build and the unit-test job are subshells of one script,
    # whose $$ is the same, and one's mv took the other's file from under its chmod.
    chmod +x "$wrapper.$BASHPID"
    mv "$wrapper.$BASHPID" "$wrapper"
    export "CARGO_TARGET_${upper}_LINKER=$wrapper" TIDELET_LAYOUT_LOG=$CROSS_LAYOUT_LOG
  fi
  export "CARGO_TARGET_${upper}_RUNNER=timeout -k 10 $CROSS_TEST_TIMEOUT $qemu -L $prefix"
  # Set for both targets although only armv7 needs it (-Z build-std): build scripts such as
  # proc-macro2's rerun when it changes, and the host artifacts (proc macros, build scripts)
  # are shared by both targets, so toggling it rebuilt every proc macro and all their users
  # on every run (a warm run then took as long as a cold one).
  export RUSTC_BOOTSTRAP=1
  CROSS_STD=()
  if [ "$t" = armv7 ]; then
    # Debian has no armv7 std package we may install (that would need the armhf dpkg
    # architecture): build core/std from rust-web-src. panic_unwind because the release
    # profile unwinds on purpose (see Cargo.toml).
    CROSS_STD=(-Z "build-std=std,panic_unwind")
  fi
}

# Builds the release binaries of the packages CROSS_PACKAGES (set by scripts/cross-build.sh)
# for target $1 into target dir $2, in one cargo invocation (their shared dependencies are
# compiled once), and records their paths in CROSS_BINS; each of CROSS_EXPECTED_BINS must be
# among them.
cross_build() {
  local t=$1 dir=$2 triple json pkgs=() p b found static=("${CROSS_STATIC_PACKAGES[@]}")
  local profile=(--release) what=release
  triple=$(cross_triple "$t")
  cross_env "$t"
  if cross_quick "$t"; then
    profile=("${CROSS_QUICK_PROFILE[@]}")
    what="quick (profile cross-quick: no optimisation, no LTO)"
  fi
  for p in "${CROSS_PACKAGES[@]}"; do pkgs+=(-p "$p"); done
  if [ "${CROSS_STATIC_PLUGINS:-1}" = 0 ]; then
    # Linked dynamically, in the first invocation: their dependencies are the agent's,
    # compiled once (CI: see scripts/test.sh).
    for p in "${static[@]}"; do pkgs+=(-p "$p"); done
    static=()
  elif [ "$t" = armv7 ]; then
    # armv7 builds its std from source (-Z build-std); static linking would build it a
    # second time, with the plugins' dependencies, for minutes of CI. Its plugins are linked
    # against the board's glibc like tidelet (about 1 MiB more RSS when idle).
    for p in "${static[@]}"; do pkgs+=(-p "$p"); done
    static=()
  fi
  [ ${#pkgs[@]} -gt 0 ] || { echo "cross: CROSS_PACKAGES is empty" >&2; return 1; }
  local marker
  marker=$(mktemp)
  : >"$CROSS_LAYOUT_LOG"
  echo "== $t: cargo build, $what, ${pkgs[*]} --bins"
  json=$(mktemp)
  "${CARGO[@]}" build --locked "${profile[@]}" --target "$triple" --target-dir "$dir" \
    "${CROSS_STD[@]}" "${pkgs[@]}" --bins --message-format=json-render-diagnostics >"$json"
  # The device plugins, in a second invocation, linked statically (glibc's libc.a): an
  # idle plugin then keeps ~1 MiB less resident than with the shared libc's pages
  # (docs/benchmarks.md, issue 6). tidelet stays dynamic: it resolves host names
  # (getaddrinfo), which static glibc cannot do without the matching NSS libraries. With
  # --target, these RUSTFLAGS reach only the target's crates, not build scripts or proc macros.
  pkgs=()
  for p in "${static[@]}"; do pkgs+=(-p "$p"); done
  if [ ${#pkgs[@]} -gt 0 ]; then
    echo "== $t: cargo build, $what, ${pkgs[*]} --bins, linked statically"
    env "CARGO_TARGET_$(echo "$triple" | tr 'a-z-' 'A-Z_')_RUSTFLAGS=-C target-feature=+crt-static" \
      "${CARGO[@]}" build --locked "${profile[@]}" --target "$triple" --target-dir "$dir" \
      "${CROSS_STD[@]}" "${pkgs[@]}" --bins --message-format=json-render-diagnostics >>"$json"
  fi
  mapfile -t CROSS_BINS < <(grep -o '"executable":"[^"]*"' "$json" | cut -d'"' -f4 | sort -u)
  rm -f "$json"
  if [ "$t" = aarch64 ] && ! cross_quick "$t"; then
    cross_layout_check "$marker" || { rm -f "$marker"; return 1; }
  fi
  rm -f "$marker"
  for b in "${CROSS_EXPECTED_BINS[@]}"; do
    found=0
    for p in "${CROSS_BINS[@]}"; do [ "${p##*/}" != "$b" ] || found=1; done
    if [ $found = 0 ]; then
      echo "cross: cargo built no $b for $triple (built: ${CROSS_BINS[*]:-nothing})" >&2
      return 1
    fi
  done
}

# The agent's release link must have been ordered by scripts/layout/linker, with a profile that
# still matches most of the code (scripts/layout/hot.txt ages as functions are renamed and
# added: below LAYOUT_MIN_MATCH percent of its keys found, it is recorded anew with
# scripts/layout/profile.sh). A binary not linked in this build (cargo found it up to date) is
# not checked. $1: a file made before the build.
LAYOUT_MIN_MATCH=60
cross_layout_check() {
  local line bin k l
  for bin in "${CROSS_BINS[@]}"; do [ "${bin##*/}" = tidelet ] && break; done
  line=$(grep -E '^tidelet-[0-9a-f]+: ' "$CROSS_LAYOUT_LOG" | tail -1 || true)
  if [ -z "$line" ]; then
    if [ "$bin" -nt "$1" ]; then
      echo "cross: tidelet was linked without the order of scripts/layout/linker (its log: $(cat "$CROSS_LAYOUT_LOG"))" >&2
      return 1
    fi
    echo "== code layout: tidelet was up to date, not relinked"
    return 0
  fi
  echo "== code layout: ${line#*: }"
  read -r k l <<<"$(sed -n 's/.*; \([0-9]*\) of \([0-9]*\) profile keys matched.*/\1 \2/p' <<<"$line")"
  if [ -z "$k" ] || [ $((k * 100)) -lt $((l * LAYOUT_MIN_MATCH)) ]; then
    echo "cross: only ${k:-?} of ${l:-?} keys of scripts/layout/hot.txt matched tidelet's functions (under $LAYOUT_MIN_MATCH%): record it anew with scripts/layout/profile.sh" >&2
    return 1
  fi
}

# CI's quick build of a target (CROSS_QUICK lists them; scripts/test.sh sets armv7): the
# release profile without optimisation and LTO. What CI asks of that target is the toolchain,
# the ABI and float ABI, linking against the board's glibc, and binaries that start under
# qemu; a quick build shows all of it for about a third of the CPU time of a release build
# (whose fat-LTO links alone take minutes of one core per binary). The size budget is not
# held against it: it is checked on the release build of aarch64, the one the VM tests run.
CROSS_QUICK_PROFILE=(
  --config 'profile.cross-quick.inherits="release"'
  --config 'profile.cross-quick.opt-level=0'
  --config 'profile.cross-quick.lto=false'
  --config 'profile.cross-quick.codegen-units=16'
  --config 'profile.cross-quick.incremental=false'
  --profile cross-quick
)

# Whether target $1 is built quick (CROSS_QUICK, a space-separated list of targets).
cross_quick() {
  [[ " ${CROSS_QUICK:-} " == *" $1 "* ]]
}

# Checks each binary of CROSS_BINS: ELF for the target's machine and ABI, stripped, within
# the size budget, and it starts under qemu-user (`--help`). Prints `file` and the size.
cross_check_bins() {
  local t=$1 bin out flags size qemu prefix
  read -r qemu prefix <<<"$(cross_qemu "$t")"
  for bin in "${CROSS_BINS[@]}"; do
    out=$(file -b "$bin")
    echo "$bin: $out"
    case "$t" in
      aarch64) [[ $out == "ELF 64-bit LSB "*", ARM aarch64, "* ]] ||
        { echo "cross: $bin is not an aarch64 ELF executable" >&2; return 1; } ;;
      armv7)
        [[ $out == "ELF 32-bit LSB "*", ARM, EABI5 "* ]] ||
          { echo "cross: $bin is not a 32-bit ARM EABI5 ELF executable" >&2; return 1; }
        # `file` does not show the float ABI; the ELF header flags do.
        flags=$(readelf -h "$bin" | sed -n 's/^ *Flags: *//p')
        [[ $flags == *"hard-float ABI"* ]] ||
          { echo "cross: $bin is not hard-float (ELF flags: $flags)" >&2; return 1; } ;;
    esac
    [[ $out == *", stripped"* ]] || { echo "cross: $bin is not stripped" >&2; return 1; }
    for p in "${CROSS_STATIC_PACKAGES[@]}"; do
      if [ "$t" != armv7 ] && [ "${CROSS_STATIC_PLUGINS:-1}" != 0 ] && [ "${bin##*/}" = "$p" ] &&
        [[ $out != *"static"* ]]; then
        echo "cross: $bin is not statically linked" >&2
        return 1
      fi
    done
    size=$(stat -c %s "$bin")
    printf '%s: stripped size %d bytes (%d.%02d MiB)\n' "$(basename "$bin")" "$size" \
      $((size / 1048576)) $((size % 1048576 * 100 / 1048576))
    if cross_quick "$t"; then
      echo "$(basename "$bin"): a quick build, not held to the size budget"
    elif [ "$size" -gt "$CROSS_SIZE_BUDGET" ]; then
      echo "cross: $bin is $size bytes, over the budget of $CROSS_SIZE_BUDGET" >&2
      return 1
    fi
    cross_check_loader "$t"
    timeout 60 "$qemu" -L "$prefix" "$bin" --help >/dev/null ||
      { echo "cross: $bin --help fails under $qemu -L $prefix" >&2; return 1; }
  done
}

# Refuses a qemu sysroot whose dynamic loader and libc.so.6 come from different glibc builds
# (see the top of this file: threads would hang).
cross_check_loader() {
  local qemu prefix ld libc a b
  read -r qemu prefix <<<"$(cross_qemu "$1")"
  case "$1" in
    aarch64) ld=/lib/ld-linux-aarch64.so.1 libc=/lib/aarch64-linux-gnu/libc.so.6 ;;
    armv7) ld=/lib/ld-linux-armhf.so.3 libc=/lib/libc.so.6 ;;
  esac
  # qemu looks a path up under the prefix first, then as it is; it does not do so for the
  # program it is given, so do it here.
  [ ! -e "${prefix%/}$ld" ] || ld=${prefix%/}$ld
  [ ! -e "${prefix%/}$libc" ] || libc=${prefix%/}$libc
  a=$("$qemu" -L "$prefix" "$ld" --version 2>&1 | sed -n '1s/.*(\(.*\)).*/\1/p')
  b=$("$qemu" -L "$prefix" "$libc" 2>&1 | sed -n '1s/.*(\(.*\)).*/\1/p')
  if [ -z "$a" ] || [ "$a" != "$b" ]; then
    echo "cross: under $qemu -L $prefix the loader $ld is '${a:-unreadable}' but $libc is" \
      "'${b:-unreadable}': glibc's loader and libc must be the same build" >&2
    return 1
  fi
}

# Runs the unit tests (lib and bin targets) of every workspace crate but the end-to-end/VM
# test crate under qemu-user, for target $1 with target dir $2.
cross_unit_tests() {
  local t=$1 dir=$2 triple
  triple=$(cross_triple "$t")
  cross_env "$t"
  cross_check_loader "$t"
  echo "== $t: unit tests under $(cross_qemu "$t" | sed 's/ / -L /')"
  # Privileged tests would panic with TIDELET_REQUIRE_PRIVILEGED set and cannot run under
  # qemu-user (no cgroup or mount namespace emulation); they run natively and in the VM.
  # The API crate's only test compares its generated code with protoc's (host-only; its
  # dev-dependency, the protobuf code generator, would be built for the target for nothing).
  # The plugins' unit tests are pure parsing and run on the host; their aarch64 binary runs
  # for real in the tests/vm guest (minutes of qemu-test builds saved).
  env -u TIDELET_REQUIRE_PRIVILEGED "${CARGO[@]}" test --locked "${CROSS_TEST_PROFILE[@]}" \
    --target "$triple" --target-dir "$dir" "${CROSS_STD[@]}" \
    --workspace --exclude tidelet-e2e --exclude tidelet-deviceplugin-api \
    --exclude tidelet-device-plugin --exclude tidelet-gpu-plugin --exclude tidelet-generic-plugin \
    --lib --bins \
    -- "${CROSS_SKIP[@]}"
}

# The profile of the tests under qemu. Not `release`: its fat LTO with one codegen unit would
# be paid again for every test harness (over 5 CPU minutes for the agent's alone), and its
# dependencies are LTO bitcode that a non-LTO build cannot reuse. `dev` without debug info:
# the cheapest build (CI's time is mostly compilation), debug assertions and overflow checks
# on. (No test asserts wall-clock time, which TCG would make flaky.)
CROSS_TEST_PROFILE=(
  --config 'profile.qemu-test.inherits="dev"'
  --config 'profile.qemu-test.opt-level=0'
  --config 'profile.qemu-test.debug=false'
  --config 'profile.qemu-test.incremental=false'
  --profile qemu-test
)

# Tests skipped under qemu-user, each with the reason.
CROSS_SKIP=(
  # Real cgroup v1/v2 hierarchies: need root and the host's cgroupfs, not the emulator's.
  --skip cgroups::privileged
  # Device rules on real cgroups and the bpf(2) syscall, which qemu-user does not emulate
  # (ENOSYS); the program's logic is checked by cgroups::bpf_tests, which do run here.
  --skip cgroups::devices_tests
)
