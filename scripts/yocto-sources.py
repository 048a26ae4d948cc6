#!/usr/bin/env python3
"""Check that meta-tidelet's recipe agrees with the source tree it builds.

bitbake would only find these mistakes deep into a build (or on the board); this runs in CI
without one. For each service the recipe ships (tidelet and its two device plugins, the
SERVICES table):
  - LIC_FILES_CHKSUM: the md5 of each `file://` entry (over beginline..endline, as bitbake
    computes it) matches the file in the checkout;
  - the files the recipe copies from ${S} (every `${S}/path` it names) exist, the unit and the
    configuration among them, installed where the unit expects them;
  - the unit starts the binary from ${bindir}, passes `--config` the path the recipe installs
    the configuration to (where the service has one), and a plugin's `--device-plugin-dir`
    is writable in the unit's sandbox (ProtectSystem=strict: under ReadWritePaths= or
    StateDirectory=);
  - the package is in SYSTEMD_PACKAGES with the unit in its SYSTEMD_SERVICE, a plugin
    package's FILES hold its binary, unit and configuration, and the configuration is a
    CONFFILES entry of that package.
Exit status 1 with one line per finding; Python 3 standard library only.
"""

from __future__ import annotations

import hashlib
import io
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
RECIPE = REPO / "yocto/meta-tidelet/recipes-containers/tidelet/tidelet_0.1.0.bb"
# OE's default paths (bitbake.conf), to read the recipe's install destinations.
OE_PATHS = {
    "${bindir}": "/usr/bin",
    "${sysconfdir}": "/etc",
    "${systemd_system_unitdir}": "/lib/systemd/system",
}


@dataclass(frozen=True)
class Service:
    """One binary of the workspace the recipe packages, with its unit and configuration."""

    package: str  # the package, as the recipe names it ("${PN}" or "${PN}-...")
    unit: str  # the unit in the source tree
    binary: str  # where the package installs the binary
    config: str | None = None  # the configuration in the source tree, if it ships one
    installed_config: str | None = None  # where the package installs it
    config_required: bool = False  # the unit must pass --config (no usable default)
    plugin_dir: bool = False  # takes --device-plugin-dir, which must stay writable


DEVICE_PLUGIN_DIR = "/var/lib/kubelet/device-plugins"  # the plugins' default
SERVICES = [
    Service("${PN}", "dist/systemd/tidelet.service", "/usr/bin/tidelet",
            "dist/tidelet.yaml", "/etc/tidelet/config.yaml"),
    Service("${PN}-gpu-plugin", "dist/systemd/tidelet-gpu-plugin.service",
            "/usr/bin/tidelet-gpu-plugin", plugin_dir=True),
    Service("${PN}-generic-plugin", "dist/systemd/tidelet-generic-plugin.service",
            "/usr/bin/tidelet-generic-plugin", "dist/generic-devices.yaml",
            "/etc/tidelet/generic-devices.yaml", config_required=True, plugin_dir=True),
]
TIDELET = SERVICES[0]
# tidelet's own, by the names the tests and older callers use.
UNIT = TIDELET.unit
CONFIG = TIDELET.config
INSTALLED_BINARY = TIDELET.binary
INSTALLED_CONFIG = TIDELET.installed_config


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


def unit_settings(unit_text: str) -> dict[str, list[str]]:
    """Every `Key=value` of a unit file, in order, with continuation lines joined; comments
    and section headers skipped. (Sections are not told apart: no key is checked in two.)"""
    settings: dict[str, list[str]] = {}
    logical: list[str] = []
    line = ""
    for raw in unit_text.splitlines():
        if not line and raw.lstrip().startswith(("#", ";")):
            continue
        if raw.endswith("\\"):
            line += raw[:-1] + " "
            continue
        logical.append(line + raw)
        line = ""
    if line:
        logical.append(line)
    for text in logical:
        m = re.match(r"\s*([A-Za-z][A-Za-z0-9]*)\s*=\s*(.*)", text)
        if m:
            settings.setdefault(m.group(1), []).append(m.group(2).strip())
    return settings


def exec_start(unit_text: str) -> list[str] | None:
    """argv of the unit's ExecStart= (prefixes like `-` or `@` dropped); None if absent."""
    for value in unit_settings(unit_text).get("ExecStart", []):
        argv = shlex.split(value)
        if argv:
            argv[0] = argv[0].lstrip("-@:+!")
            return argv
    return None


def option(argv: list[str], name: str) -> str | None:
    """The value of `--name VALUE` or `--name=VALUE` in argv; None if absent."""
    for i, arg in enumerate(argv):
        if arg == name and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def writable_paths(settings: dict[str, list[str]]) -> list[str] | None:
    """The paths a unit's sandbox leaves writable below /var, /etc, /usr...: None when the unit
    does not make the tree read-only (no ProtectSystem=strict)."""
    if "strict" not in settings.get("ProtectSystem", []):
        return None
    paths = []
    for value in settings.get("ReadWritePaths", []):
        paths += [p.lstrip("-+") for p in value.split()]
    for value in settings.get("StateDirectory", []):
        paths += ["/var/lib/" + p.split(":")[0] for p in value.split()]
    return paths


def under(path: str, parent: str) -> bool:
    path, parent = path.rstrip("/"), parent.rstrip("/")
    return path == parent or path.startswith(parent + "/")


def check_unit(unit_text: str, service: Service = TIDELET) -> list[str]:
    argv = exec_start(unit_text)
    if not argv:
        return [f"{service.unit}: no ExecStart= line"]
    findings = []
    if argv[0] != service.binary:
        findings.append(f"{service.unit}: ExecStart runs {argv[0]!r}; the recipe installs {service.binary}")
    config = option(argv, "--config")
    if config is not None and config != service.installed_config:
        findings.append(
            f"{service.unit}: ExecStart passes --config {config}; the recipe installs "
            f"{service.config} as {service.installed_config}"
        )
    if config is None and service.config_required:
        findings.append(
            f"{service.unit}: ExecStart passes no --config; the plugin needs one (the recipe "
            f"installs {service.config} as {service.installed_config})"
        )
    if service.plugin_dir:
        plugin_dir = option(argv, "--device-plugin-dir") or DEVICE_PLUGIN_DIR
        writable = writable_paths(unit_settings(unit_text))
        if writable is not None and not any(under(plugin_dir, w) for w in writable):
            findings.append(
                f"{service.unit}: the device-plugin directory {plugin_dir} is read-only under "
                f"ProtectSystem=strict (writable: {', '.join(writable) or 'nothing'}); the "
                "plugin could not create its socket: add it to ReadWritePaths="
            )
    return findings


def installed_sources(recipe_text: str) -> list[str]:
    """The files the recipe copies out of the checkout: every `${S}/path` it names, in order."""
    seen: list[str] = []
    for rel in re.findall(r"\$\{S\}/([^\s;\"']+)", recipe_text):
        if rel not in seen and not rel.endswith("Cargo.lock"):
            seen.append(rel)
    return seen


def oe_path(path: str) -> str:
    """A recipe path with OE's default directory variables expanded."""
    for var, value in OE_PATHS.items():
        path = path.replace(var, value)
    return path


def install_destinations(recipe_text: str, rel: str) -> list[str]:
    """Where the recipe's `install ... ${S}/rel ${D}DEST` lines put a file (OE paths expanded)."""
    pattern = r"\binstall\b[^\n]*\$\{S\}/" + re.escape(rel) + r"\s+\$\{D\}(\S+)"
    return [oe_path(m) for m in re.findall(pattern, recipe_text)]


def assignments(recipe_text: str, var: str) -> str:
    """The values of every `VAR = "..."`, `VAR += "..."` (and ?=, :append) joined; bitbake's
    line continuations removed. Good enough for the recipe's plain assignments."""
    pattern = r"^" + re.escape(var) + r'(?::append)?\s*(?:\?\?=|\?=|\+=|=)\s*"((?:[^"\\]|\\.)*)"'
    found = re.findall(pattern, recipe_text, re.M | re.S)
    return " ".join(v.replace("\\\n", " ") for v in found)


def check_packaging(recipe_text: str, recipe_name: str, service: Service) -> list[str]:
    """The recipe's package variables for one service agree with the files it installs."""
    pkg, unit_name = service.package, Path(service.unit).name
    findings = []
    if pkg not in assignments(recipe_text, "SYSTEMD_PACKAGES").split() and pkg != "${PN}":
        findings.append(f"{recipe_name}: SYSTEMD_PACKAGES does not list {pkg}")
    if unit_name not in assignments(recipe_text, f"SYSTEMD_SERVICE:{pkg}").split():
        findings.append(f"{recipe_name}: SYSTEMD_SERVICE:{pkg} does not name {unit_name}")
    if pkg != "${PN}":
        if pkg not in assignments(recipe_text, "PACKAGE_BEFORE_PN").split() + \
                assignments(recipe_text, "PACKAGES").split():
            findings.append(f"{recipe_name}: {pkg} is not a package (PACKAGE_BEFORE_PN)")
        files = [oe_path(f) for f in assignments(recipe_text, f"FILES:{pkg}").split()]
        wanted = [service.binary, "/lib/systemd/system/" + unit_name]
        if service.installed_config:
            wanted.append(service.installed_config)
        for path in wanted:
            if path not in files:
                findings.append(f"{recipe_name}: FILES:{pkg} does not hold {path}")
    if service.installed_config:
        conffiles = [oe_path(f) for f in assignments(recipe_text, f"CONFFILES:{pkg}").split()]
        if service.installed_config not in conffiles:
            findings.append(
                f"{recipe_name}: CONFFILES:{pkg} does not list {service.installed_config} "
                "(an upgrade would overwrite the board's edits)"
            )
    return findings


def check(src: Path, recipe: Path) -> list[str]:
    try:
        recipe_text = recipe.read_text(encoding="utf-8")
    except OSError as e:
        return [f"{recipe}: cannot read: {e.strerror}"]
    findings = check_license(recipe_text, src)
    for service in SERVICES:
        sources = [(service.unit, "/lib/systemd/system/" + Path(service.unit).name)]
        if service.config:
            sources.append((service.config, service.installed_config))
        for rel, dest in sources:
            if f"${{S}}/{rel}" not in recipe_text:
                findings.append(f"{recipe.name}: does not install {rel} (expected in do_install)")
                continue
            dests = install_destinations(recipe_text, rel)
            if dests and dest not in dests:
                findings.append(f"{recipe.name}: installs {rel} as {', '.join(dests)}, expected {dest}")
        findings += check_packaging(recipe_text, recipe.name, service)
    for rel in installed_sources(recipe_text):
        if not (src / rel).is_file():
            findings.append(f"{rel}: missing from the source tree; the recipe's do_install copies it")
    for service in SERVICES:
        unit = src / service.unit
        if unit.is_file():
            findings += check_unit(unit.read_text(encoding="utf-8"), service)
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
