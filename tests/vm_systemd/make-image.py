#!/usr/bin/env python3
"""Write a one-layer OCI archive, localhost/busybox:1.35, from a busybox binary of another
architecture: images/build-test-images.sh labels its images with the host's architecture,
and tidelet only imports images of its own.

usage: make-image.py OUT.tar BUSYBOX OCI_ARCH APPLET...
Deterministic: the same inputs give the same bytes."""
import gzip, hashlib, io, json, os, sys, tarfile

out, busybox, arch, applets = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4:]
MTIME = 1700000000


def sha(b):
    return hashlib.sha256(b).hexdigest()


def jbytes(o):
    return json.dumps(o, sort_keys=True, separators=(",", ":")).encode()


def add(t, name, kind, data=None, mode=0o755, target=None):
    ti = tarfile.TarInfo(name)
    ti.mtime, ti.uid, ti.gid, ti.uname, ti.gname = MTIME, 0, 0, "", ""
    if kind == "dir":
        ti.type, ti.mode = tarfile.DIRTYPE, mode
    elif kind == "symlink":
        ti.type, ti.mode, ti.linkname = tarfile.SYMTYPE, 0o777, target
    else:
        ti.type, ti.mode, ti.size = tarfile.REGTYPE, mode, len(data)
    t.addfile(ti, io.BytesIO(data) if data is not None else None)


layer = io.BytesIO()
with tarfile.open(fileobj=layer, mode="w", format=tarfile.PAX_FORMAT) as t:
    for d in ("bin", "dev", "etc", "proc", "sys", "usr", "usr/bin", "usr/sbin", "sbin", "root"):
        add(t, d, "dir")
    add(t, "tmp", "dir", mode=0o1777)
    with open(busybox, "rb") as f:
        add(t, "bin/busybox", "file", f.read())
    for a in sorted(set(applets) - {"busybox"}):
        add(t, "bin/" + a, "symlink", target="busybox")
    add(t, "etc/passwd", "file", b"root:x:0:0:root:/root:/bin/sh\n", 0o644)
    add(t, "etc/group", "file", b"root:x:0:\n", 0o644)
layer_tar = layer.getvalue()
gz = io.BytesIO()
with gzip.GzipFile(filename="", mode="wb", fileobj=gz, mtime=0, compresslevel=6) as g:
    g.write(layer_tar)
layer_gz = gz.getvalue()

config = jbytes({
    "architecture": arch, "os": "linux", "created": "2023-11-14T22:13:20Z",
    "config": {"Cmd": ["/bin/sh"], "Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
    "rootfs": {"type": "layers", "diff_ids": ["sha256:" + sha(layer_tar)]},
})
manifest = jbytes({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
               "digest": "sha256:" + sha(config), "size": len(config)},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                "digest": "sha256:" + sha(layer_gz), "size": len(layer_gz)}],
})
index = jbytes({
    "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json",
    "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
                   "digest": "sha256:" + sha(manifest), "size": len(manifest),
                   "platform": {"architecture": arch, "os": "linux"},
                   "annotations": {"org.opencontainers.image.ref.name": "localhost/busybox:1.35"}}],
})
with tarfile.open(out + ".tmp", mode="w", format=tarfile.PAX_FORMAT) as t:
    add(t, "oci-layout", "file", jbytes({"imageLayoutVersion": "1.0.0"}), 0o644)
    add(t, "index.json", "file", index, 0o644)
    add(t, "blobs", "dir")
    add(t, "blobs/sha256", "dir")
    for b in (config, layer_gz, manifest):
        add(t, "blobs/sha256/" + sha(b), "file", b, 0o644)
os.replace(out + ".tmp", out)
