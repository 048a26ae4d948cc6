#!/usr/bin/env python3
"""Check that meta-tidelet's recipe agrees with the source tree it builds.

bitbake would only find these mistakes deep into a build; this runs in CI without one:
  - LIC_FILES_CHKSUM: the md5 of each `file://` entry (over beginline..endline, as bitbake
    computes it) matches the file in the checkout;
  - the files the recipe copies from ${S} (every `${S}/path` it names) exist;
  - the systemd unit starts ${bindir}/tidelet and, if it passes `--config`, the path the
    recipe installs the default configuration to.
Exit status 1 with one line per finding; Python 3 standard library only.
"""

from __future__ import annotations

import hashlib
import io
import re
import shlex
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "yocto/meta-tidelet/recipes-containers/tidelet/tidelet_0.1.0.bb"
# What the recipe's do_install copies, and where to (OE's default bindir and sysconfdir).
UNIT = "dist/systemd/tidelet.service"
CONFIG = "dist/tidelet.yaml"
INSTALLED_BINARY = "/usr/bin/tidelet"
INSTALLED_CONFIG = "/etc/tidelet/config.yaml"


def lic_entries(recipe_text: str) -> list[tuple[str, dict[str, str]]]:
    """(path, parameters) of each file:// entry of LIC_FILES_CHKSUM."""
    m = re.search(r'^LIC_FILES_CHKSUM\s*\+?=\s*"((?:[^"\\]|\\.)*)"', recipe_text, re.M | re.S)
    if not m:
        return []
    entries = []
    for uri in m.group(1).replace("\\\n", " ").split():
        if not uri.startswith("file://"):
            continue
        path, *params = uri[len("file://"):].split(";")
        entries.append((path, dict(p.split("=", 1) for p in params if "=" in p)))
    return entries


def lic_md5(data: bytes, beginline: int | None, endline: int | None) -> str:
    """md5 of lines beginline..endline (1-based, inclusive, with their newlines) as bitbake's
    license check hashes them; the whole file when neither is given."""
    md5 = hashlib.md5()
    # Iterate like bitbake's `for line in open(path, "rb")`: split after b"\n" only.
    for lineno, line in enumerate(io.BytesIO(data), start=1):
        if beginline and lineno < beginline:
            continue
        if endline and lineno > endline:
            break
        md5.update(line)
    return md5.hexdigest()


def check_license(recipe_text: str, src: Path) -> list[str]:
    findings = []
    entries = lic_entries(recipe_text)
    if not entries:
        return ["LIC_FILES_CHKSUM: no file:// entry found in the recipe"]
    for path, params in entries:
        f = src / path
        try:
            data = f.read_bytes()
        except OSError as e:
            findings.append(f"LIC_FILES_CHKSUM: {path}: cannot read: {e.strerror}")
            continue
        begin = int(params["beginline"]) if "beginline" in params else None
        end = int(params["endline"]) if "endline" in params else None
        got = lic_md5(data, begin, end)
        if params.get("md5") != got:
            findings.append(
                f"LIC_FILES_CHKSUM: {path} lines {begin or 1}..{end or 'end'} have md5 {got}, "
                f"the recipe says {params.get('md5')!r}: the license text moved or changed; "
                "check the license, then update beginline/endline/md5"
            )
    return findings


def exec_start(unit_text: str) -> list[str] | None:
    """argv of the unit's ExecStart= (prefixes like `-` or `@` dropped); None if absent."""
    for line in unit_text.splitlines():
        m = re.match(r"\s*ExecStart\s*=\s*(.+)", line)
        if m:
            argv = shlex.split(m.group(1))
            if argv:
                argv[0] = argv[0].lstrip("-@:+!")
            return argv
    return None


def check_unit(unit_text: str) -> list[str]:
    argv = exec_start(unit_text)
    if not argv:
        return [f"{UNIT}: no ExecStart= line"]
    findings = []
    if argv[0] != INSTALLED_BINARY:
        findings.append(f"{UNIT}: ExecStart runs {argv[0]!r}; the recipe installs {INSTALLED_BINARY}")
    for i, arg in enumerate(argv):
        value = None
        if arg == "--config" and i + 1 < len(argv):
            value = argv[i + 1]
        elif arg.startswith("--config="):
            value = arg.split("=", 1)[1]
        if value is not None and value != INSTALLED_CONFIG:
            findings.append(
                f"{UNIT}: ExecStart passes --config {value}; the recipe installs {CONFIG} "
                f"as {INSTALLED_CONFIG}"
            )
    return findings


def installed_sources(recipe_text: str) -> list[str]:
    """The files the recipe copies out of the checkout: every `${S}/path` it names, in order."""
    seen: list[str] = []
    for rel in re.findall(r"\$\{S\}/([^\s;\"']+)", recipe_text):
        if rel not in seen and not rel.endswith("Cargo.lock"):
            seen.append(rel)
    return seen


def check(src: Path, recipe: Path) -> list[str]:
    try:
        recipe_text = recipe.read_text(encoding="utf-8")
    except OSError as e:
        return [f"{recipe}: cannot read: {e.strerror}"]
    findings = check_license(recipe_text, src)
    for rel in (UNIT, CONFIG):
        if f"${{S}}/{rel}" not in recipe_text:
            findings.append(f"{recipe.name}: does not install {rel} (expected in do_install)")
    for rel in installed_sources(recipe_text):
        if not (src / rel).is_file():
            findings.append(f"{rel}: missing from the source tree; the recipe's do_install copies it")
    unit = src / UNIT
    if unit.is_file():
        findings += check_unit(unit.read_text(encoding="utf-8"))
    return findings


def main() -> int:
    findings = check(REPO, RECIPE)
    for f in findings:
        print(f"yocto-sources: {f}", file=sys.stderr)
    if not findings:
        print("yocto-sources: recipe agrees with the source tree")
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main())
