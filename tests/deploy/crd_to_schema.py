"""Convert CustomResourceDefinition YAML into kubeconform JSON schemas.

Usage: python tests/deploy/crd_to_schema.py OUT_DIR CRD.yaml...
Writes OUT_DIR/<group>/<kind lower>_<version>.json for every served version, the layout of
kubeconform's `{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json` template.
Unknown fields are rejected (additionalProperties: false wherever the CRD lists properties
and does not preserve unknown fields), as the API server's structural pruning would drop them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import yaml


def strict(node: Any) -> Any:
    if isinstance(node, dict):
        out = {k: strict(v) for k, v in node.items()}
        if "properties" in out and "additionalProperties" not in out \
                and not out.get("x-kubernetes-preserve-unknown-fields"):
            out["additionalProperties"] = False
        return out
    if isinstance(node, list):
        return [strict(v) for v in node]
    return node


def convert(crd: dict[str, Any], out_dir: Path) -> list[Path]:
    spec = crd["spec"]
    group, kind = spec["group"], spec["names"]["kind"].lower()
    written = []
    for version in spec["versions"]:
        if not version.get("served"):
            continue
        schema = strict(version["schema"]["openAPIV3Schema"])
        # apiVersion/kind/metadata are checked by kubeconform itself; allow them here.
        schema.setdefault("properties", {}).update(
            {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}})
        path = out_dir / group / f"{kind}_{version['name']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
        written.append(path)
    return written


def main(argv: list[str]) -> int:
    out_dir = Path(argv[0])
    for name in argv[1:]:
        for doc in yaml.safe_load_all(Path(name).read_text()):
            if doc and doc.get("kind") == "CustomResourceDefinition":
                for p in convert(doc, out_dir):
                    print(p)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
