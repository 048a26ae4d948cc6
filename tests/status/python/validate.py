"""Validates Kubernetes objects with kubernetes-validate in strict mode (unknown fields are
errors), for tests/e2e/status_schema.rs.

usage: validate.py --kubernetes-version 1.37 FILE...

Each FILE holds JSON or YAML, one or more documents; a `List` is checked item by item (there is
no schema for `v1` List, and kubectl prints one the same way). One line per object:
`ok FILE[#i] kind/name VERSION` or `FAIL FILE[#i] kind/name: path: message` (every schema error
of that object, not only the first, so one run shows everything to fix), then
`checked N objects, M failed`. Exit status 1 when any object fails, 2 on bad input.

kubernetes-validate's own `validate` decides; its verdict must come from the version asked for
(it would otherwise fall back to an older schema set without saying so). Its command line is
not used: it reports only the first error, and a kind it has no schema for is only a warning.
"""

import argparse
import json
import sys

import jsonschema
import kubernetes_validate
import referencing
import yaml
from kubernetes_validate import utils


def documents(path):
    with open(path) as f:
        text = f.read()
    try:
        docs = [json.loads(text)]
    except json.JSONDecodeError:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    out = []
    for d in docs:
        if isinstance(d, dict) and d.get("kind") == "List":
            items = d.get("items")
            if not isinstance(items, list):
                raise ValueError("%s: a List without items" % path)
            out.extend(items)
        else:
            out.append(d)
    return out


def all_errors(obj, version):
    """Every schema error of obj, from the same strict schema files kubernetes-validate
    uses (its `validate` raises at the first)."""
    api = obj["apiVersion"]
    group_version = api.split("/")
    if len(group_version) == 2:
        api = "%s-%s" % (group_version[0].split(".")[0], group_version[1])
    schema_dir = "kubernetes-json-schema/v%s-local-strict" % version
    schema = utils.schema_contents(
        "%s/%s-%s.json" % (schema_dir, obj["kind"].lower(), api), version
    )
    defs = utils.schema_contents("%s/_definitions.json" % schema_dir, version)
    registry = referencing.Resource.from_contents(defs) @ (
        referencing.Resource.from_contents(schema) @ referencing.Registry()
    )
    v = jsonschema.validators.Draft202012Validator(schema, registry=registry)
    return [
        "%s: %s" % (".".join(str(p) for p in e.absolute_path) or "<root>", e.message)
        for e in sorted(v.iter_errors(obj), key=lambda e: list(map(str, e.absolute_path)))
    ]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--kubernetes-version", required=True)
    ap.add_argument("files", nargs="+")
    args = ap.parse_args()
    want = utils.major_minor(args.kubernetes_version)
    if want not in {utils.major_minor(v) for v in utils.all_versions()}:
        print(
            "kubernetes-validate %s has no schemas for Kubernetes %s (newest: %s)"
            % (kubernetes_validate.__version__, want, utils.latest_version())
        )
        return 2
    full = [v for v in utils.all_versions() if utils.major_minor(v) == want][-1]
    checked = failed = 0
    for path in args.files:
        try:
            docs = documents(path)
        except Exception as e:  # noqa: BLE001 - any unreadable input is a failure to report
            print("FAIL %s: cannot read: %s" % (path, e))
            return 2
        if not docs:
            print("FAIL %s: no objects" % path)
            return 2
        for i, obj in enumerate(docs):
            label = path if len(docs) == 1 else "%s#%d" % (path, i)
            checked += 1
            try:
                name = "%s/%s" % (obj["kind"], obj["metadata"]["name"])
            except (KeyError, TypeError):
                print("FAIL %s: not an object with kind and metadata.name" % label)
                failed += 1
                continue
            try:
                got = kubernetes_validate.validate(obj, full, strict=True)
            except kubernetes_validate.ValidationError:
                failed += 1
                for err in all_errors(obj, full):
                    print("FAIL %s %s: %s" % (label, name, err))
                continue
            except Exception as e:  # noqa: BLE001 - no schema, bad schema: all failures
                failed += 1
                print("FAIL %s %s: %s" % (label, name, getattr(e, "message", e)))
                continue
            if got != want:
                failed += 1
                print("FAIL %s %s: validated against %s, not %s" % (label, name, got, want))
                continue
            print("ok %s %s %s" % (label, name, got))
    print("checked %d objects, %d failed" % (checked, failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
