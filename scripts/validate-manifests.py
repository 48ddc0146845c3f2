#!/usr/bin/env python3
"""Validates rendered Kubernetes manifests (multi-document YAML files) against the Kubernetes
JSON schemas of kubernetes-validate, strictly (unknown fields are errors), for every version
given with -k.

Kinds without a schema there fail, except the two Prometheus Operator kinds named in
CRD_SCHEMAS, which are checked against the small structural schemas below instead (the fields
the operator needs and our runbook promises), so a typo in them still fails.

    validate-manifests.py -k 1.30.0 -k 1.37.0 rendered-dev.yaml rendered-production.yaml
"""

import argparse
import sys

import jsonschema
import yaml
from kubernetes_validate import utils

_RULE = {
    "type": "object",
    "required": ["alert", "expr", "labels", "annotations"],
    "properties": {
        "alert": {"type": "string", "pattern": "^[A-Za-z][A-Za-z0-9]*$"},
        "expr": {"type": "string", "minLength": 1},
        "for": {"type": "string", "pattern": "^[0-9]+[smhd]$"},
        "labels": {
            "type": "object",
            "required": ["severity"],
            "properties": {"severity": {"enum": ["critical", "warning", "info"]}},
        },
        "annotations": {
            "type": "object",
            "required": ["summary", "runbook_url"],
            "additionalProperties": {"type": "string"},
        },
    },
    "additionalProperties": False,
}

_METADATA = {"type": "object", "required": ["name"]}

CRD_SCHEMAS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["selector", "endpoints"],
                "properties": {
                    "selector": {"type": "object", "required": ["matchLabels"]},
                    "endpoints": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["port"],
                            "properties": {
                                "port": {"type": "string"},
                                "path": {"type": "string", "pattern": "^/"},
                                "interval": {"type": "string", "pattern": "^[0-9]+[smh]$"},
                                "scrapeTimeout": {"type": "string", "pattern": "^[0-9]+[smh]$"},
                            },
                            "additionalProperties": False,
                        },
                    },
                },
                "additionalProperties": False,
            },
        },
    },
    ("monitoring.coreos.com/v1", "PrometheusRule"): {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "metadata": _METADATA,
            "spec": {
                "type": "object",
                "required": ["groups"],
                "properties": {
                    "groups": {
                        "type": "array",
                        "minItems": 1,
                        "items": {
                            "type": "object",
                            "required": ["name", "rules"],
                            "properties": {
                                "name": {"type": "string"},
                                "rules": {"type": "array", "minItems": 1, "items": _RULE},
                            },
                            "additionalProperties": False,
                        },
                    }
                },
                "additionalProperties": False,
            },
        },
    },
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", "--kubernetes-version", action="append", required=True)
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()

    failures = 0
    checked = 0
    for path in args.files:
        with open(path) as f:
            docs = [d for d in yaml.safe_load_all(f) if d]
        if not docs:
            print(f"ERROR {path}: no resources", file=sys.stderr)
            failures += 1
        for doc in docs:
            name = f"{doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            crd = CRD_SCHEMAS.get((doc.get("apiVersion"), doc.get("kind")))
            for version in args.kubernetes_version:
                checked += 1
                try:
                    if crd is not None:
                        jsonschema.validate(doc, crd)
                    else:
                        utils.validate(doc, version, strict=True)
                except jsonschema.ValidationError as e:
                    where = ".".join(str(p) for p in e.absolute_path)
                    print(f"ERROR {path}: {name} (kubernetes {version}): {where}: {e.message}",
                          file=sys.stderr)
                    failures += 1
                except utils.SchemaNotFoundError as e:
                    print(f"ERROR {path}: {name}: {e.message}", file=sys.stderr)
                    failures += 1
    print(f"validate-manifests: {checked} resource checks, {failures} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
