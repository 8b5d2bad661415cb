"""deploy/k8s rendered by the real kustomize and validated by kubeconform -strict against the
Kubernetes 1.29 and 1.37 schemas (PyPI kubernetes-validate, made strict) and the Strimzi 1.x / KEDA CRD
schemas in tests/deploy/schemas (see its README). tools/k8s-tools.sh installs the tools;
a missing tool fails these tests, it never skips them.
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.deploy.crd_to_schema import strict

ROOT = Path(__file__).resolve().parents[2]
K8S = ROOT / "deploy" / "k8s"
CRD_SCHEMAS = Path(__file__).resolve().parent / "schemas"
K8S_VERSIONS = ("1.29.0", "1.37.0")
KUSTOMIZATIONS = ("base", "overlays/example", "overlays/example-prefixed", "namespace")
# The built-in kinds deploy/k8s uses (a new kind without a schema fails as "could not find schema").
KINDS = ("deployment", "service", "configmap", "serviceaccount", "poddisruptionbudget", "networkpolicy", "ingress",
         "namespace", "secret")


def tool(name: str) -> str:
    bin_dir = os.environ.get("EXSF_K8S_BIN") or str(Path(os.environ.get("EXSF_CACHE_DIR", Path.home() / ".cache/exsf"))
                                                     / "bin")
    path = shutil.which(name, path=bin_dir) or shutil.which(name)
    assert path, f"{name} not found in {bin_dir}: run tools/k8s-tools.sh (tools/test.sh does)"
    return path


def render(k8s: Path, kdir: str) -> str:
    out = subprocess.run([tool("kustomize"), "build", str(k8s / kdir)], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    return out.stdout


def standalone_schemas(dest: Path, version: str) -> Path:
    """kubernetes-validate's schemas $ref '/api/_definitions.json', which kubeconform cannot
    load: write self-contained copies (definitions inlined as $defs)."""
    # find_spec, not import: only the package's data files are used.
    spec = importlib.util.find_spec("kubernetes_validate")
    assert spec and spec.submodule_search_locations, "kubernetes-validate is not installed (test extras)"
    src = Path(next(iter(spec.submodule_search_locations))) / "kubernetes-json-schema" / f"v{version}-local"
    assert src.is_dir(), f"kubernetes-validate has no schemas for {version}"
    # Strict like kubeconform's own "-strict" schema sets: no properties beyond the schema's.
    defs = strict(json.loads((src / "_definitions.json").read_text())["$defs"])
    out = dest / f"v{version}-local"
    out.mkdir(parents=True, exist_ok=True)
    for f in src.glob("*.json"):
        if f.name.split("-")[0] not in KINDS:
            continue
        schema = json.loads(f.read_text().replace('"/api/_definitions.json#/$defs/', '"#/$defs/'))
        schema = strict(schema)
        schema["$defs"] = defs
        (out / f.name).write_text(json.dumps(schema))
    return dest


@pytest.fixture(scope="session")
def k8s_schemas(tmp_path_factory: pytest.TempPathFactory) -> Path:
    dest = tmp_path_factory.mktemp("k8s-schemas")
    for v in K8S_VERSIONS:
        standalone_schemas(dest, v)
    return dest


def kubeconform(manifests: str, schemas: Path, version: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [tool("kubeconform"), "-strict", "-summary", "-kubernetes-version", version,
         "-schema-location", f"{schemas}/{{{{ .NormalizedKubernetesVersion }}}}-local/"
                             "{{ .ResourceKind }}{{ .KindSuffix }}.json",
         "-schema-location", f"{CRD_SCHEMAS}/" "{{ .Group }}/{{ .ResourceKind }}_{{ .ResourceAPIVersion }}.json",
         "-"],
        input=manifests, capture_output=True, text=True, check=False)


@pytest.mark.parametrize("version", K8S_VERSIONS)
@pytest.mark.parametrize("kdir", KUSTOMIZATIONS)
def test_rendered_manifests_are_valid(k8s_schemas: Path, kdir: str, version: str) -> None:
    out = kubeconform(render(K8S, kdir), k8s_schemas, version)
    assert out.returncode == 0, out.stdout + out.stderr


def test_overlay_does_not_own_the_namespace() -> None:
    # kubectl delete -k of the overlay must not delete the namespace Kafka lives in.
    kinds = [d["kind"] for d in yaml.safe_load_all(render(K8S, "overlays/example")) if d]
    assert "Namespace" not in kinds and "Deployment" in kinds


@pytest.mark.parametrize(("file", "old", "new"), [
    # an unknown field in a Deployment (Kubernetes schema)
    ("base/deployment-writer.yaml", "      terminationGracePeriodSeconds: 60",
     "      terminationGracePeriodSeconds: 60\n      terminationGraceSeconds: 60"),
    # the removed Strimzi apiVersion (no schema: kubeconform must not pass it)
    ("base/kafka-user.yaml", "kafka.strimzi.io/v1\n", "kafka.strimzi.io/v1beta2\n"),
    # a wrong type in a KafkaTopic (Strimzi CRD schema)
    ("base/kafka-topics.yaml", "  partitions: 12\n", "  partitions: twelve\n"),
    # an unknown field in a ScaledObject (KEDA CRD schema)
    ("base/keda.yaml", "  pollingInterval: 30\n", "  pollingInterval: 30\n  pollInterval: 30\n"),
])
def test_kubeconform_rejects_broken_manifest(k8s_schemas: Path, tmp_path: Path, file: str, old: str,
                                              new: str) -> None:
    copy = tmp_path / "k8s"
    shutil.copytree(K8S, copy)
    text = (copy / file).read_text()
    assert old in text
    (copy / file).write_text(text.replace(old, new, 1))
    out = kubeconform(render(copy, "overlays/example"), k8s_schemas, K8S_VERSIONS[0])
    assert out.returncode != 0, out.stdout
