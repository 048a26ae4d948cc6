#!/usr/bin/env python3
"""Linker wrapper (run by ./linker): links tidelet's shipped binaries with their hot code together.

Why: the kernel maps a binary's code 64 KiB at a time around each page that runs (fault-around),
so code that runs spread over the whole text keeps nearly all of it resident: the agent's RSS was
mostly file pages of its own text (docs/benchmarks.md, issue 16). `scripts/layout/profile.sh`
records which functions run in a day of an agent's life (start, pods created, edited and deleted,
idle) into `scripts/layout/hot.txt`; this wrapper gives the linker (lld) an order that puts those
functions first, together. Nothing else changes: same code, same size.

Use: cargo's linker for a target (`.cargo/config.toml` for the host, `scripts/cross/lib.sh` for
aarch64), with TIDELET_LINKER naming the real linker driver (default `cc`). It orders only an
LTO link (at most a few objects: one per binary after fat LTO); every other link (debug builds,
tests, build scripts) goes straight through. It needs lld (`-fuse-ld=lld`); a link without it,
or a profile that matches nothing, is done unordered with a note on stderr, never failed.

The profile names functions by their demangled names (`c++filt`) without what differs between
builds (compiler version, target, profile): v0 mangling's crate disambiguators
(`core[c1f1a4ba060b9bfa]`), LLVM's suffixes of local copies (`.123`) and, for code built with
legacy mangling, its trailing hash (`::h<16 hex>`). tidelet is built with v0 mangling
(`.cargo/config.toml`), whose names carry a generic function's type arguments: legacy names
keep them only in the hash, so every instance of a hot generic function was placed with it.
"""
import os
import re
import struct
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
PROFILE = os.environ.get("TIDELET_LAYOUT_PROFILE", os.path.join(HERE, "hot.txt"))
# A fat-LTO link has one object per codegen unit (one here), plus the allocator shim's at most.
MAX_OBJECTS = 4
# What differs between builds, in a demangled name (see the module's doc).
LEGACY_HASH = re.compile(r"::h[0-9a-f]{16}$")
DISAMBIGUATOR = re.compile(r"\[[0-9a-f]{1,16}\]")
LLVM_SUFFIX = re.compile(r"(\.(llvm|cold|part)\.[0-9]+|\.[0-9]+)+$")
# The binaries ordered: the agent's (cargo links `deps/tidelet-<hash>`). The profile is the
# agent's; the supervisor (`tidelet-shim`) and the plugins run other code, which an order made
# for the agent would not help.
ORDERED = re.compile(r"^tidelet(-[0-9a-f]+)?$")


def keys(names):
    """The profile's keys of mangled names, in their order (one `c++filt` for all)."""
    plain = [LLVM_SUFFIX.sub("", n) for n in names]
    tool = os.environ.get("TIDELET_CXXFILT", "c++filt")
    out = subprocess.run([tool], input="\n".join(plain) + "\n", capture_output=True,
                         text=True, check=True).stdout.split("\n")
    if len(out) < len(names):
        raise ValueError(f"{tool} gave {len(out)} lines for {len(names)} names")
    return [DISAMBIGUATOR.sub("", LEGACY_HASH.sub("", d)) for d in out[:len(names)]]


def functions(path):
    """Names of the functions an ELF relocatable object defines (32 or 64 bit, little endian)."""
    with open(path, "rb") as f:
        data = f.read()
    if data[:4] != b"\x7fELF" or data[5] != 1:
        return []
    is64 = data[4] == 2
    if is64:
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum = struct.unpack_from("<HH", data, 0x3A)
    else:
        shoff, = struct.unpack_from("<I", data, 0x20)
        shentsize, shnum = struct.unpack_from("<HH", data, 0x2E)
    sections = []
    for i in range(shnum):
        off = shoff + i * shentsize
        if is64:
            _, typ, _, _, offset, size, link, _, _, entsize = struct.unpack_from("<IIQQQQIIQQ", data, off)
        else:
            _, typ, _, _, offset, size, link, _, _, entsize = struct.unpack_from("<IIIIIIIIII", data, off)
        sections.append((typ, offset, size, link, entsize))
    names = []
    for typ, offset, size, link, entsize in sections:
        if typ != 2 or not entsize:  # SHT_SYMTAB
            continue
        _, stroff, strsize, _, _ = sections[link]
        for j in range(size // entsize):
            so = offset + j * entsize
            if is64:
                st_name, st_info = struct.unpack_from("<IB", data, so)
            else:
                st_name, = struct.unpack_from("<I", data, so)
                st_info = data[so + 12]
            if st_info & 0xF != 2 or not st_name:  # STT_FUNC
                continue
            end = data.index(b"\0", stroff + st_name)
            names.append(data[stroff + st_name:end].decode("utf-8", "replace"))
    return names


def order_file(objects, note):
    """Writes the symbol order for `objects`; returns its path, or None to link unordered."""
    try:
        with open(PROFILE) as f:
            hot = [l.strip() for l in f if l.strip() and not l.startswith("#")]
    except OSError as e:
        note(f"no profile ({e}); linked unordered")
        return None
    rank = {k: i for i, k in enumerate(hot)}
    names = [n for o in objects for n in functions(o)]
    defined = len(names)
    placed = []
    for name, k in zip(names, keys(names)):
        r = rank.get(k)
        if r is not None:
            placed.append((r, name))
    if not placed:
        return None
    placed.sort()
    matched = len({r for r, _ in placed})
    note(f"{len(placed)} of {defined} functions placed first; {matched} of {len(hot)} profile keys matched")
    fd, path = tempfile.mkstemp(prefix="tidelet-order-", suffix=".txt")
    with os.fdopen(fd, "w") as f:
        f.writelines(name + "\n" for _, name in placed)
    return path


def main():
    args = sys.argv[1:]
    real = os.environ.get("TIDELET_LINKER", "cc")
    out = next((args[i + 1] for i, a in enumerate(args[:-1]) if a == "-o"), "")
    objects = [a for a in args if a.endswith(".o") and os.path.isfile(a)]
    extra = []
    # rustc passes an argument list too long for the command line in an @file: only links of
    # many objects get there, and those are never ordered.
    if any(a.startswith("@") for a in args):
        objects = []
    # After fat LTO all Rust code is in those objects; only compiler_builtins stays an rlib.
    # A link of many rlibs (debug builds, tests) is not an LTO link: not ordered.
    if sum(a.endswith(".rlib") for a in args) > 2:
        objects = []
    name = os.path.basename(out)
    if not ORDERED.match(name):
        objects = []
    lld = "-fuse-ld=lld" in args
    if not lld and os.environ.get("TIDELET_LAYOUT_LLD") == "1" and 0 < len(objects) <= MAX_OBJECTS:
        # A toolchain whose default linker is not lld (Debian's for aarch64): lld for the
        # ordered links only, the others keep the default.
        extra.append("-fuse-ld=lld")
        lld = True
    if 0 < len(objects) <= MAX_OBJECTS and lld:

        def note(msg):
            sys.stderr.write(f"scripts/layout/linker: {name}: {msg}\n")
            log = os.environ.get("TIDELET_LAYOUT_LOG")
            if log:
                with open(log, "a") as f:
                    f.write(f"{name}: {msg}\n")

        try:
            path = order_file(objects, note)
        except (OSError, ValueError, struct.error, subprocess.CalledProcessError) as e:
            note(f"cannot read the objects or demangle their names ({e}); linked unordered")
            path = None
        if path:
            extra += [f"-Wl,--symbol-ordering-file={path}", "-Wl,--no-warn-symbol-ordering"]
            try:
                return subprocess.call([real] + args + extra)
            finally:
                os.unlink(path)
    os.execvp(real, [real] + args + extra)


if __name__ == "__main__":
    sys.exit(main())
