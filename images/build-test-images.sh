#!/usr/bin/env bash
# Build tidelet's small test images from Debian's busybox-static, deterministically:
#   OUTDIR/busybox.oci.tar     OCI archive,        localhost/busybox:1.35
#   OUTDIR/busybox.docker.tar  docker save format, localhost/busybox-docker:1.35
#   OUTDIR/layered.oci.tar     OCI archive,        localhost/layered:1 (whiteouts, entrypoint)
# Same inputs give byte-identical archives; re-running only rewrites them (atomically).
#
# ARCH (optional; default: the host's) is the images' architecture, as `uname -m` or Debian
# names it: x86_64/amd64 or aarch64/arm64. For a foreign one, busybox-static of that Debian
# architecture is fetched with `apt-get download` (needs `dpkg --add-architecture`, which
# scripts/cross-build.sh does) and cached in OUTDIR; the OCI config says that architecture.
set -euo pipefail

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
    echo "usage: $0 OUTDIR [ARCH]   (ARCH: x86_64 | amd64 | aarch64 | arm64; default: the host's)" >&2
    exit 2
fi
OUTDIR=$1
ARCH=${2:-$(uname -m)}
# Debian architecture, and the OCI (GOARCH) architecture and variant of the image config.
case "$ARCH" in
    x86_64|amd64)  DEB_ARCH=amd64; OCI_ARCH=amd64; OCI_VARIANT="" ;;
    aarch64|arm64) DEB_ARCH=arm64; OCI_ARCH=arm64; OCI_VARIANT="" ;;
    *) echo "$0: unknown ARCH $ARCH (x86_64 | amd64 | aarch64 | arm64)" >&2; exit 2 ;;
esac
mkdir -p "$OUTDIR"

if ! dpkg -s busybox-static >/dev/null 2>&1; then
    echo "installing busybox-static" >&2
    if ! DEBIAN_FRONTEND=noninteractive apt-get install -y busybox-static >&2; then
        apt-get update >&2
        DEBIAN_FRONTEND=noninteractive apt-get install -y busybox-static >&2
    fi
fi
HOST_BUSYBOX=/bin/busybox
[ -x "$HOST_BUSYBOX" ] || { echo "$HOST_BUSYBOX missing after installing busybox-static" >&2; exit 1; }
if [ "$DEB_ARCH" = "$(dpkg --print-architecture)" ]; then
    BUSYBOX=${BUSYBOX:-$HOST_BUSYBOX}
else
    # The foreign busybox, cached next to the archives; it cannot run here, so the applet
    # list comes from the host's busybox of the same Debian version.
    BUSYBOX=${BUSYBOX:-$OUTDIR/.busybox-$DEB_ARCH}
    if [ ! -x "$BUSYBOX" ]; then
        dpkg --print-foreign-architectures | grep -qx "$DEB_ARCH" || {
            echo "$0: the dpkg architecture $DEB_ARCH is not enabled: dpkg --add-architecture $DEB_ARCH && apt-get update (scripts/cross-build.sh does)" >&2
            exit 1
        }
        dl=$(mktemp -d)
        (cd "$dl" && apt-get download "busybox-static:$DEB_ARCH" >&2) || {
            echo "$0: apt-get download busybox-static:$DEB_ARCH failed (apt-get update?)" >&2
            rm -rf "$dl"; exit 1
        }
        dpkg-deb --fsys-tarfile "$dl"/busybox-static_*.deb | tar -xO ./bin/busybox > "$BUSYBOX.tmp"
        rm -rf "$dl"
        chmod 755 "$BUSYBOX.tmp" && mv "$BUSYBOX.tmp" "$BUSYBOX"
    fi
fi
[ -x "$BUSYBOX" ] || { echo "$BUSYBOX missing" >&2; exit 1; }

APPLETS=$("$HOST_BUSYBOX" --list | grep -vx busybox | sort | tr '\n' ' ')

exec python3 - "$OUTDIR" "$BUSYBOX" "$APPLETS" "$OCI_ARCH" "$OCI_VARIANT" <<'PY'
import gzip, hashlib, io, json, os, sys, tarfile

outdir, busybox, applets = sys.argv[1], sys.argv[2], sys.argv[3].split()
arch, variant = sys.argv[4], sys.argv[5] or None
MTIME = 1700000000  # fixed: archives must not depend on when they were built
PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

def tar_bytes(entries):
    """entries: (name, kind, dict) with kind in file/dir/symlink/char; deterministic output."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as t:
        for name, kind, o in entries:
            ti = tarfile.TarInfo(name)
            ti.mtime = MTIME
            ti.uid, ti.gid = o.get("uid", 0), o.get("gid", 0)
            ti.uname = ti.gname = ""
            data = None
            if kind == "dir":
                ti.type, ti.mode = tarfile.DIRTYPE, o.get("mode", 0o755)
            elif kind == "symlink":
                ti.type, ti.mode, ti.linkname = tarfile.SYMTYPE, 0o777, o["target"]
            else:
                data = o["data"]
                ti.type, ti.mode, ti.size = tarfile.REGTYPE, o.get("mode", 0o644), len(data)
            t.addfile(ti, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()

def gz(b):
    out = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=out, mtime=0, compresslevel=6) as g:
        g.write(b)
    return out.getvalue()

def sha(b):
    return hashlib.sha256(b).hexdigest()

def jbytes(o):
    return json.dumps(o, sort_keys=True, separators=(",", ":")).encode()

with open(busybox, "rb") as f:
    bb = f.read()

base = [("bin", "dir", {}), ("bin/busybox", "file", {"data": bb, "mode": 0o755})]
base += [("bin/" + a, "symlink", {"target": "busybox"}) for a in applets]
base += [
    ("dev", "dir", {}), ("etc", "dir", {}),
    ("etc/passwd", "file", {"data": b"root:x:0:0:root:/root:/bin/sh\n"
                                     b"app:x:1000:1000:app:/home/app:/bin/sh\n"
                                     b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"}),
    ("etc/group", "file", {"data": b"root:x:0:\napp:x:1000:\nnogroup:x:65534:\n"}),
    ("home", "dir", {}), ("home/app", "dir", {"uid": 1000, "gid": 1000}),
    ("proc", "dir", {}), ("root", "dir", {"mode": 0o700}), ("sys", "dir", {}),
    ("tmp", "dir", {"mode": 0o1777}),
    ("usr", "dir", {}), ("usr/bin", "dir", {}), ("usr/sbin", "dir", {}), ("sbin", "dir", {}),
]
base_tar = tar_bytes(base)
base_gz = gz(base_tar)

middle_tar = tar_bytes([
    ("data", "dir", {}), ("data/old1.txt", "file", {"data": b"old one\n"}),
    ("data/sub", "dir", {}), ("data/sub/old2.txt", "file", {"data": b"old two\n"}),
    ("etc", "dir", {}), ("etc/removeme.txt", "file", {"data": b"deleted by the top layer\n"}),
    ("etc/keep.txt", "file", {"data": b"kept\n"}),
    ("work", "dir", {}),
])
top_tar = tar_bytes([
    ("data", "dir", {}), ("data/.wh..wh..opq", "file", {"data": b""}),
    ("data/new.txt", "file", {"data": b"new\n"}),
    ("etc", "dir", {}), ("etc/.wh.removeme.txt", "file", {"data": b""}),
    ("work", "dir", {}), ("work/added.txt", "file", {"data": b"added by the top layer\n"}),
])
top_gz = gz(top_tar)

def config(layers_uncompressed, run):
    c = {"architecture": arch, "os": "linux", "created": "2023-11-14T22:13:20Z",
         "config": run,
         "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha(l) for l in layers_uncompressed]}}
    if variant:
        c["variant"] = variant
    return jbytes(c)

L_GZ = "application/vnd.oci.image.layer.v1.tar+gzip"
L_TAR = "application/vnd.oci.image.layer.v1.tar"

def write_atomic(name, data):
    path = os.path.join(outdir, name)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)

def oci_archive(name, ref, layers, run):
    """layers: (blob bytes, uncompressed bytes, media type)"""
    cfg = config([u for _, u, _ in layers], run)
    blobs = {sha(cfg): cfg}
    manifest = {"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + sha(cfg), "size": len(cfg)},
                "layers": []}
    for blob, _, mt in layers:
        blobs[sha(blob)] = blob
        manifest["layers"].append({"mediaType": mt, "digest": "sha256:" + sha(blob), "size": len(blob)})
    m = jbytes(manifest)
    blobs[sha(m)] = m
    plat = {"architecture": arch, "os": "linux"}
    if variant:
        plat["variant"] = variant
    index = jbytes({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
                    "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": "sha256:" + sha(m),
                                   "size": len(m), "platform": plat,
                                   "annotations": {"org.opencontainers.image.ref.name": ref}}]})
    entries = [("blobs", "dir", {}), ("blobs/sha256", "dir", {})]
    entries += [("blobs/sha256/" + h, "file", {"data": blobs[h]}) for h in sorted(blobs)]
    entries += [("index.json", "file", {"data": index}),
                ("oci-layout", "file", {"data": jbytes({"imageLayoutVersion": "1.0.0"})})]
    write_atomic(name, tar_bytes(entries))

def docker_archive(name, tag, layers, run):
    cfg = config(layers, run)
    ids = []
    entries = []
    parent = ""
    for l in layers:
        lid = sha((parent + sha(l)).encode())  # legacy layer id: deterministic, chained
        parent = lid
        ids.append(lid)
        entries += [(lid, "dir", {}), (lid + "/VERSION", "file", {"data": b"1.0"}),
                    (lid + "/json", "file", {"data": jbytes({"id": lid})}),
                    (lid + "/layer.tar", "file", {"data": l})]
    entries.append((sha(cfg) + ".json", "file", {"data": cfg}))
    entries.append(("manifest.json", "file", {"data": jbytes([{"Config": sha(cfg) + ".json", "RepoTags": [tag],
                                                               "Layers": [i + "/layer.tar" for i in ids]}])}))
    repo, t = tag.rsplit(":", 1)
    entries.append(("repositories", "file", {"data": jbytes({repo: {t: ids[-1]}})}))
    write_atomic(name, tar_bytes(entries))

busybox_run = {"Cmd": ["/bin/sh"], "Env": [PATH]}
oci_archive("busybox.oci.tar", "localhost/busybox:1.35", [(base_gz, base_tar, L_GZ)], busybox_run)
docker_archive("busybox.docker.tar", "localhost/busybox-docker:1.35", [base_tar], busybox_run)
oci_archive("layered.oci.tar", "localhost/layered:1",
            [(base_gz, base_tar, L_GZ), (middle_tar, middle_tar, L_TAR), (top_gz, top_tar, L_GZ)],
            {"Entrypoint": ["/bin/echo", "from-entrypoint"], "Cmd": ["cmd-arg"], "WorkingDir": "/work",
             "Env": [PATH, "GREETING=hello"]})
for n in ("busybox.oci.tar", "busybox.docker.tar", "layered.oci.tar"):
    print(os.path.join(outdir, n))
PY
