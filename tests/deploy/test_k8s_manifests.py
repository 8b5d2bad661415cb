"""Semantic checks of the Kubernetes deployment in deploy/k8s, on what the real `kustomize
build` renders (v5.8.2, installed by tools/k8s-tools.sh; see test_kubeconform.py, which also
validates the same output against the Kubernetes, Strimzi and KEDA schemas).

kustomize and kubeconform check that the manifests build and are well-formed; they cannot
check that they fit exsf: one Deployment per service with probes on the side port, KEDA
triggers on exactly the groups and topics each service consumes, ACLs for its transactional
ids, no secret values in git, a webhook URL on the Ingress host, and so on. Those checks are
here. Every check is a function returning a list of problems; the tests assert the list is
empty, and `test_check_detects_mutation` breaks a copy of the manifests in one way per check
(written back as YAML and rendered again by kustomize) to show the check can fail.
"""

from __future__ import annotations

import copy
import re
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import pytest
import yaml

from services.cli_services import SERVICES
from services.core.topics import ALL_TOPICS, Namespace, Topics, topic_specs
from tests.deploy.test_kubeconform import tool

K8S = Path(__file__).resolve().parents[2] / "deploy" / "k8s"
BASE = "base"
OVERLAY = "overlays/example"
# The example as a deployment with EXSF_TOPIC_PREFIX (components/topic-prefix).
PREFIXED = "overlays/example-prefixed"
RENDERS = (BASE, OVERLAY, PREFIXED)

# Input topics per consumer service (its consumer group is <prefix>exsf-<service>): what
# KEDA scales on. Names without the prefix; `consumed` applies it.
CONSUMED = {
    "reconciler": {"exsf.changes.exchange", "exsf.changes.salesforce", "exsf.results"},
    "writer": {"exsf.commands.exchange", "exsf.commands.salesforce"},
}


def consumed(svc: str, prefix: str) -> set[str] | None:
    topics = CONSUMED.get(svc)
    return None if topics is None else {prefix + t for t in topics}
# Services that call Graph / Salesforce and so resolve tenant secret references.
TENANT_SECRET_USERS = {"ingest-exchange", "ingest-salesforce", "writer"}
TENANT_SECRETS_DIR = "/var/run/secrets/exsf/tenants"
SECRETISH = re.compile(r"PASSWORD|SECRET|TOKEN|CREDENTIAL|PRIVATE", re.IGNORECASE)
SECRET_VALUE = re.compile(r"-----BEGIN|\beyJ[\w-]{10,}\.|^literal:|password=|://[^/\s:@]+:[^/\s@]+@", re.IGNORECASE)
KUSTOMIZATION_NAMES = {"kustomization.yaml", "kustomization.yml", "Kustomization"}


# --- loading and rendering -----------------------------------------------------------------


@dataclass
class Tree:
    """The YAML files of a deploy/k8s tree (the real one, or a copy being broken on purpose)."""

    root: Path
    files: dict[Path, list[Any]]  # path relative to root -> its documents

    def kustomizations(self) -> dict[Path, dict[str, Any]]:
        return {p.parent: docs[0] for p, docs in self.files.items() if p.name in KUSTOMIZATION_NAMES}

    def write(self, dest: Path) -> Tree:
        """The same documents as YAML under `dest` (comments are lost, content is not)."""
        for rel, docs in self.files.items():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            (dest / rel).write_text(yaml.safe_dump_all(docs, sort_keys=False))
        return Tree(dest, self.files)


def load_tree(root: Path = K8S) -> Tree:
    paths = sorted(p for p in root.rglob("*") if p.suffix in (".yaml", ".yml") and p.is_file())
    files: dict[Path, list[Any]] = {}
    for p in paths:
        with p.open() as fh:
            files[p.relative_to(root)] = [d for d in yaml.safe_load_all(fh) if d is not None]
    return Tree(root, files)


def kustomize(root: Path, kdir: str) -> tuple[list[dict[str, Any]], str]:
    """(objects, "") as `kustomize build` renders them, or ([], its error)."""
    out = subprocess.run([tool("kustomize"), "build", str(root / kdir)], capture_output=True, text=True,
                         check=False)
    if out.returncode != 0:
        return [], out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"
    return [d for d in yaml.safe_load_all(out.stdout) if isinstance(d, dict)], ""


@dataclass
class Build:
    tree: Tree
    rendered: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # base / overlay -> objects
    errors: dict[str, str] = field(default_factory=dict)  # kustomization that failed -> kustomize's error


def build(tree: Tree) -> Build:
    b = Build(tree)
    for kdir in RENDERS:
        b.rendered[kdir], err = kustomize(tree.root, kdir)
        if err:
            b.errors[kdir] = err
    return b


@pytest.fixture(scope="module")
def real() -> Build:
    return build(load_tree())


def of_kind(objs: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {o["metadata"]["name"]: o for o in objs if o.get("kind") == kind}


def config(objs: list[dict[str, Any]]) -> dict[str, str]:
    # kustomize's configMapGenerator appends a content hash to the name (and rewrites refs).
    cms = [o for n, o in of_kind(objs, "ConfigMap").items() if n == "exsf-config" or n.startswith("exsf-config-")]
    assert len(cms) == 1, f"one ConfigMap exsf-config expected, found {len(cms)}"
    return {k: str(v) for k, v in cms[0].get("data", {}).items()}


def prefix_of(objs: list[dict[str, Any]]) -> str:
    """EXSF_TOPIC_PREFIX as the pods get it (empty: the historical names)."""
    return config(objs).get("EXSF_TOPIC_PREFIX", "")


def partitions(objs: list[dict[str, Any]]) -> int:
    return int(config(objs)["EXSF_PARTITIONS"])


def selects(match_labels: dict[str, str] | None, labels: dict[str, str]) -> bool:
    return bool(match_labels) and all(labels.get(k) == v for k, v in (match_labels or {}).items())


def pod_labels(dep: dict[str, Any]) -> dict[str, str]:
    return dep["spec"]["template"]["metadata"].get("labels", {})


def container(dep: dict[str, Any]) -> dict[str, Any]:
    containers = dep["spec"]["template"]["spec"]["containers"]
    return containers[0]


def service_of(dep: dict[str, Any]) -> str | None:
    cmd = container(dep).get("command") or []
    return cmd[2] if len(cmd) == 3 and cmd[:2] == ["exsf", "run"] else None


def env_of(dep: dict[str, Any], objs: list[dict[str, Any]]) -> dict[str, str]:
    """The container's effective literal environment: envFrom ConfigMaps, then env."""
    c = container(dep)
    out: dict[str, str] = {}
    cms = of_kind(objs, "ConfigMap")
    for ef in c.get("envFrom") or []:
        ref = (ef.get("configMapRef") or {}).get("name")
        if ref in cms:
            out.update({k: str(v) for k, v in cms[ref].get("data", {}).items()})
    for e in c.get("env") or []:
        if "value" in e:
            out[e["name"]] = str(e["value"])
    return out


def named_port(dep: dict[str, Any], name: str) -> int | None:
    for p in container(dep).get("ports") or []:
        if p.get("name") == name:
            return int(p["containerPort"])
    return None


_UNITS = {"": 1, "m": 1e-3, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "k": 1e3, "M": 1e6, "G": 1e9}


def quantity(q: Any) -> float:
    m = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(q))
    assert m and m.group(2) in _UNITS, f"bad quantity {q!r}"
    return float(m.group(1)) * _UNITS[m.group(2)]


def secret_volume_files(dep: dict[str, Any]) -> dict[str, tuple[str, set[str] | None]]:
    """mountPath -> (secret name, file names or None for every key) of Secret volumes."""
    spec = dep["spec"]["template"]["spec"]
    vols = {v["name"]: v for v in spec.get("volumes") or []}
    out: dict[str, tuple[str, set[str] | None]] = {}
    for m in container(dep).get("volumeMounts") or []:
        sec = vols.get(m["name"], {}).get("secret")
        if sec:
            items = sec.get("items")
            out[m["mountPath"].rstrip("/")] = (sec["secretName"], {i["path"] for i in items} if items else None)
    return out


def file_is_mounted(dep: dict[str, Any], path: str) -> bool:
    parent, _, name = path.rpartition("/")
    mounted = secret_volume_files(dep).get(parent)
    return mounted is not None and (mounted[1] is None or name in mounted[1])


# --- checks ------------------------------------------------------------------------------


def _resource_paths(kdir: Path, k: dict[str, Any]) -> list[Path]:
    return [Path(*(kdir / e).parts) for e in k.get("resources") or []]


def _normal(p: Path) -> Path:
    parts: list[str] = []
    for part in p.parts:
        if part == "..":
            parts.pop()
        elif part != ".":
            parts.append(part)
    return Path(*parts) if parts else Path(".")


def _patch_paths(kdir: Path, k: dict[str, Any]) -> list[Path]:
    out = [kdir / p["path"] for p in k.get("patches") or [] if "path" in p]
    out += [kdir / p for p in k.get("patchesStrategicMerge") or [] if isinstance(p, str)]
    out += [kdir / p["path"] for p in k.get("patchesJson6902") or [] if "path" in p]
    return out


def _literals(gen: dict[str, Any]) -> dict[str, str]:
    return dict(str(lit).split("=", 1) for lit in gen.get("literals") or [])


def kustomization_problems(b: Build) -> list[str]:
    """kustomize itself rejects missing files and bad patches; what it cannot see is a
    manifest in the tree that no kustomization includes (it would silently not be applied)."""
    problems = [f"kustomize build {kdir} fails: {err}" for kdir, err in b.errors.items()]
    t = b.tree
    ks = t.kustomizations()
    if Path(BASE) not in ks or Path(OVERLAY) not in ks:
        problems.append("deploy/k8s/base and deploy/k8s/overlays/example need a kustomization.yaml")
    listed = {_normal(p) for kdir, k in ks.items() for p in _resource_paths(kdir, k) + _patch_paths(kdir, k)}
    for p in t.files:
        if p.name not in KUSTOMIZATION_NAMES and p not in listed:
            problems.append(f"{p} is not listed in any kustomization.yaml")
    return problems


def deployment_problems(objs: list[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    deps = of_kind(objs, "Deployment")
    pdbs = of_kind(objs, "PodDisruptionBudget")
    cms = of_kind(objs, "ConfigMap")
    services = [service_of(d) for d in deps.values()]
    if sorted(s for s in services if s) != sorted(SERVICES):
        problems.append(f"one Deployment per service {sorted(SERVICES)} expected, commands run {services}")
    for name, dep in deps.items():
        c = container(dep)
        pod = dep["spec"]["template"]["spec"]
        labels = pod_labels(dep)
        svc = service_of(dep)
        if svc not in SERVICES:
            problems.append(f"{name}: command {c.get('command')} is not `exsf run <service>`")
        if not selects(dep["spec"]["selector"].get("matchLabels"), labels):
            problems.append(f"{name}: selector does not select its pod template")
        env = env_of(dep, objs)
        for ef in c.get("envFrom") or []:
            ref = (ef.get("configMapRef") or {}).get("name")
            if ref not in cms:
                problems.append(f"{name}: envFrom references unknown ConfigMap {ref}")
        metrics = named_port(dep, "metrics")
        if metrics is None or env.get("EXSF_SIDE_PORT") != str(metrics):
            side = env.get("EXSF_SIDE_PORT")
            problems.append(f"{name}: port `metrics` ({metrics}) must equal EXSF_SIDE_PORT ({side})")
        for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
            get = (c.get(probe) or {}).get("httpGet") or {}
            if get.get("path") != path or get.get("port") != "metrics":
                problems.append(f"{name}: {probe} must GET {path} on port `metrics`, has {get}")
        if svc == "reconciler":
            get = (c.get("startupProbe") or {}).get("httpGet") or {}
            if get.get("port") != "metrics" or get.get("path") not in ("/healthz", "/readyz"):
                problems.append(f"{name}: the reconciler restores state and needs a startupProbe")
        res = c.get("resources") or {}
        for kind in ("cpu", "memory", "ephemeral-storage"):
            req, lim = (res.get("requests") or {}).get(kind), (res.get("limits") or {}).get(kind)
            if req is None or lim is None:
                problems.append(f"{name}: resources.requests and .limits need {kind}")
            elif quantity(req) > quantity(lim):
                problems.append(f"{name}: {kind} request {req} exceeds limit {lim}")
        sc, psc = c.get("securityContext") or {}, pod.get("securityContext") or {}
        if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
            problems.append(f"{name}: runAsNonRoot missing")
        if sc.get("readOnlyRootFilesystem") is not True:
            problems.append(f"{name}: readOnlyRootFilesystem must be true")
        if sc.get("allowPrivilegeEscalation") is not False:
            problems.append(f"{name}: allowPrivilegeEscalation must be false")
        if "ALL" not in ((sc.get("capabilities") or {}).get("drop") or []):
            problems.append(f"{name}: capabilities must drop ALL")
        seccomp = (sc.get("seccompProfile") or psc.get("seccompProfile") or {}).get("type")
        if seccomp != "RuntimeDefault":
            problems.append(f"{name}: seccompProfile must be RuntimeDefault, is {seccomp}")
        pre_stop = ((c.get("lifecycle") or {}).get("preStop") or {}).get("exec", {}).get("command") or []
        delay = int(pre_stop[1]) if len(pre_stop) == 2 and pre_stop[0] == "sleep" else 0
        if named_port(dep, "webhook") is not None and delay < 5:
            # Endpoint removal races SIGTERM: without the sleep the ingress keeps sending
            # Graph's POSTs to a pod that no longer accepts them.
            problems.append(f"{name}: serves the webhook and needs a preStop sleep of >= 5 s")
        if int(pod.get("terminationGracePeriodSeconds", 30)) < 55 + delay:
            problems.append(f"{name}: terminationGracePeriodSeconds must cover preStop + the 50 s drain")
        ann = dep["spec"]["template"]["metadata"].get("annotations") or {}
        if ann.get("prometheus.io/scrape") != "true" or ann.get("prometheus.io/port") != str(metrics):
            problems.append(f"{name}: prometheus scrape annotations must point at the metrics port")
        tsc = pod.get("topologySpreadConstraints") or []
        if not tsc or not all(selects(x.get("labelSelector", {}).get("matchLabels"), labels) for x in tsc):
            problems.append(f"{name}: topologySpreadConstraints missing or not selecting its pods")
        vols = {v["name"]: v for v in pod.get("volumes") or []}
        mounts = {m["mountPath"]: m["name"] for m in c.get("volumeMounts") or []}
        for path, vol in mounts.items():
            if vol not in vols:
                problems.append(f"{name}: mount {path} uses undefined volume {vol}")
        if "emptyDir" not in vols.get(mounts.get("/tmp", ""), {}):
            problems.append(f"{name}: /tmp must be a writable emptyDir")
        if svc == "reconciler":
            state = env.get("EXSF_STATE_DIR")
            if state is None or "emptyDir" not in vols.get(mounts.get(state, ""), {}):
                problems.append(f"{name}: EXSF_STATE_DIR ({state}) must be an emptyDir mount")
        for key, value in env.items():
            if value.startswith("file:") and not file_is_mounted(dep, value[5:]):
                problems.append(f"{name}: {key}={value} is not a file of a mounted Secret")
            if key.endswith("FILE") and value.startswith("/") and not file_is_mounted(dep, value):
                problems.append(f"{name}: {key}={value} is not a file of a mounted Secret")
        tenants = secret_volume_files(dep).get(TENANT_SECRETS_DIR)
        if svc in TENANT_SECRET_USERS and (tenants is None or tenants[0] != "exsf-tenant-secrets"):
            problems.append(f"{name}: Secret exsf-tenant-secrets must be mounted at {TENANT_SECRETS_DIR}")
        matching = [p for p in pdbs.values() if selects(p["spec"].get("selector", {}).get("matchLabels"), labels)]
        if len(matching) != 1 or matching[0]["spec"].get("maxUnavailable") != 1:
            problems.append(f"{name}: needs exactly one PodDisruptionBudget with maxUnavailable 1")
    for pname, pdb in pdbs.items():
        if not any(selects(pdb["spec"].get("selector", {}).get("matchLabels"), pod_labels(d)) for d in deps.values()):
            problems.append(f"PodDisruptionBudget {pname} selects no Deployment")
    return problems


def _strings(node: Any, where: str) -> Iterator[tuple[str, str]]:
    if isinstance(node, dict):
        for k, v in node.items():
            yield from _strings(v, f"{where}.{k}")
    elif isinstance(node, list):
        for i, v in enumerate(node):
            yield from _strings(v, f"{where}[{i}]")
    elif isinstance(node, str):
        yield where, node


def _named_value_problem(where: str, name: str, value: str) -> str | None:
    if SECRETISH.search(name) and not (name.endswith("_REF") and value.startswith(("file:", "env:"))):
        return f"{where}: {name} looks like a secret: it must be a *_REF to file: or env:, not a value"
    return None


def secret_problems(b: Build) -> list[str]:
    """On the files in git (what a reviewer sees) and on what kustomize renders from them."""
    t = b.tree
    problems: list[str] = []
    for path, docs in t.files.items():
        for doc in docs:
            for where, s in _strings(doc, path.name):
                if SECRET_VALUE.search(s):
                    problems.append(f"{where}: value looks like a secret")
            if not isinstance(doc, dict):
                continue
            if doc.get("kind") == "Secret" and (doc.get("data") or doc.get("stringData")):
                problems.append(f"{path.name}: Secret {doc['metadata']['name']} carries data in git")
            if doc.get("kind") == "ConfigMap":
                for k, v in (doc.get("data") or {}).items():
                    problems.append(_named_value_problem(path.name, k, str(v)) or "")
            for spec in _pod_specs(doc):
                for c in spec.get("containers", []) + spec.get("initContainers", []):
                    for e in c.get("env") or []:
                        if "value" in e:
                            problems.append(_named_value_problem(path.name, e["name"], str(e["value"])) or "")
                        elif "secretKeyRef" in (e.get("valueFrom") or {}):
                            problems.append(f"{path.name}: env {e['name']} from a Secret: mount it as a file")
                    if any("secretRef" in ef for ef in c.get("envFrom") or []):
                        problems.append(f"{path.name}: envFrom a Secret: mount it as files")
    for kdir, k in t.kustomizations().items():
        if k.get("secretGenerator"):
            problems.append(f"{kdir}/kustomization.yaml: secretGenerator puts secret values in git")
        for gen in k.get("configMapGenerator") or []:
            for key, value in _literals(gen).items():
                problems.append(_named_value_problem(f"{kdir}/kustomization.yaml", key, value) or "")
    for kdir, objs in b.rendered.items():
        for o in of_kind(objs, "ConfigMap").values():
            for key, value in (o.get("data") or {}).items():
                problems.append(_named_value_problem(f"rendered {kdir}", key, str(value)) or "")
    return [p for p in problems if p]


def _pod_specs(doc: dict[str, Any]) -> Iterator[dict[str, Any]]:
    spec = doc.get("spec")
    if isinstance(spec, dict):
        tpl = spec.get("template")
        if isinstance(tpl, dict) and isinstance(tpl.get("spec"), dict):
            yield tpl["spec"]


def topic_problems(objs: list[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    topics = {o["spec"].get("topicName", o["metadata"]["name"]): o for o in objs if o.get("kind") == "KafkaTopic"}
    prefix = prefix_of(objs)
    expected = {prefix + t for t in ALL_TOPICS}
    if set(topics) != expected:
        problems.append(f"KafkaTopics {sorted(topics)} != services.core.topics.ALL_TOPICS {sorted(expected)}")
    n = partitions(objs)
    clusters = {o["metadata"].get("labels", {}).get("strimzi.io/cluster") for o in objs
                if o.get("apiVersion", "").startswith("kafka.strimzi.io/")}
    if len(clusters) != 1 or None in clusters:
        problems.append(f"Strimzi resources must name one cluster (strimzi.io/cluster), name {clusters}")
    for spec in topic_specs(n, prefix):
        o = topics.get(spec.name)
        if o is None:
            continue
        # Strimzi 1.x serves only kafka.strimzi.io/v1 (v1beta2 was removed).
        if o.get("apiVersion") != "kafka.strimzi.io/v1":
            problems.append(f"{spec.name}: apiVersion {o.get('apiVersion')}")
        s, cfg = o["spec"], o["spec"].get("config") or {}
        if s.get("partitions") != spec.partitions:
            problems.append(f"{spec.name}: partitions {s.get('partitions')} != EXSF_PARTITIONS {spec.partitions}")
        if s.get("replicas") != 3:
            problems.append(f"{spec.name}: replicas {s.get('replicas')} != 3")
        policy = "compact" if spec.compacted else "delete"
        if cfg.get("cleanup.policy") != policy:
            problems.append(f"{spec.name}: cleanup.policy {cfg.get('cleanup.policy')} != {policy}")
        retention = cfg.get("retention.ms")
        if (None if retention is None else int(retention)) != spec.retention_ms:
            problems.append(f"{spec.name}: retention.ms {retention} != {spec.retention_ms}")
    return problems


def _acl_hits(acl: dict[str, Any], rtype: str, name: str) -> bool:
    r = acl.get("resource") or {}
    if r.get("type") != rtype or acl.get("type", "allow") != "allow":
        return False
    if r.get("patternType", "literal") == "prefix":
        return name.startswith(r.get("name", ""))
    return r.get("name") in (name, "*")


def _acl_allows(acls: list[dict[str, Any]], rtype: str, name: str, op: str) -> bool:
    for acl in acls:
        ops = set(acl.get("operations") or [acl.get("operation")])
        implied = op == "Describe" and bool(ops & {"Read", "Write"})
        if _acl_hits(acl, rtype, name) and (op in ops or "All" in ops or implied):
            return True
    return False


# What each kind of Kafka resource needs, and nothing more: topics are read and written
# (Strimzi creates them), groups are joined and committed to (Read), transactional ids are
# used (Write). Describe is implied by Read/Write but harmless to list.
ACL_OPERATIONS = {
    "topic": {"Read", "Write", "Describe"},
    "group": {"Read", "Describe"},
    "transactionalId": {"Write", "Describe"},
}


def kafka_names(prefix: str, partitions: int) -> dict[str, set[str]]:
    """Every topic, consumer group and transactional id the services use for a prefix,
    derived from the code that names them (services/core/topics.py: Topics, Namespace;
    one group and one transactional id per partition for each service of SERVICES)."""
    ns = Namespace(prefix)
    topics = Topics.with_prefix(prefix)
    return {
        "topic": {getattr(topics, f.name) for f in fields(Topics)},
        "group": {ns.group(svc) for svc in SERVICES},
        "transactionalId": {ns.transactional_id(svc, p) for svc in SERVICES for p in range(partitions)},
    }


def acl_problems(acls: list[dict[str, Any]], prefix: str, partitions: int) -> list[str]:
    """The ACLs cover every name the code uses for `prefix`, and nothing broader: no other
    resource types or operations, no ACL that covers none of those names, none that
    reaches outside the deployment's namespace (another deployment's names)."""
    problems: list[str] = []
    names = kafka_names(prefix, partitions)
    for rtype, ops in ACL_OPERATIONS.items():
        for name in sorted(names[rtype]):
            for op in sorted(ops - {"Describe"} or ops):
                if not _acl_allows(acls, rtype, name, op):
                    problems.append(f"lacks {op} on {rtype} {name}")
    roots = {"topic": prefix + "exsf.", "group": prefix + "exsf-", "transactionalId": prefix + "exsf-"}
    # (A sibling prefix that starts with "exsf" would fall under the unprefixed ACLs: the
    # README and components/topic-prefix say not to choose one.)
    siblings = [kafka_names(other, partitions) for other in ("", "other.") if other != prefix]
    for acl in acls:
        r = acl.get("resource") or {}
        rtype, name = r.get("type", ""), r.get("name", "")
        what = f"ACL {r.get('patternType', 'literal')} {rtype} {name!r}"
        if rtype not in ACL_OPERATIONS:
            problems.append(f"{what}: exsf needs no {rtype} ACL")
            continue
        extra = set(acl.get("operations") or [acl.get("operation")]) - ACL_OPERATIONS[rtype]
        if extra:
            problems.append(f"{what}: operations {sorted(extra)} are not needed")
        if not any(_acl_hits(acl, rtype, n) for n in names[rtype]):
            problems.append(f"{what}: covers none of the deployment's names")
        if not name.startswith(roots[rtype]):
            problems.append(f"{what}: broader than the deployment's namespace {roots[rtype]!r}")
        for sib in siblings:
            hit = sorted(n for n in sib[rtype] if _acl_hits(acl, rtype, n))
            if hit:
                problems.append(f"{what}: also grants another deployment's {hit[0]}")
    return problems


def kafka_user_problems(objs: list[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    users = of_kind(objs, "KafkaUser")
    cfg = config(objs)
    user = users.get(cfg.get("EXSF_KAFKA_SASL_USERNAME", ""))
    if user is None:
        return [f"no KafkaUser named EXSF_KAFKA_SASL_USERNAME={cfg.get('EXSF_KAFKA_SASL_USERNAME')}"]
    if (user["spec"].get("authentication") or {}).get("type") != "scram-sha-512":
        problems.append("KafkaUser must authenticate with scram-sha-512")
    if cfg.get("EXSF_KAFKA_SASL_MECHANISM") != "SCRAM-SHA-512" or cfg.get("EXSF_KAFKA_SECURITY_PROTOCOL") != "SASL_SSL":
        problems.append("services must use SASL_SSL with SCRAM-SHA-512")
    acls = (user["spec"].get("authorization") or {}).get("acls") or []
    who = user["metadata"]["name"]
    problems += [f"KafkaUser {who}: {p}" for p in acl_problems(acls, prefix_of(objs), partitions(objs))]
    # The services mount the user's Strimzi secret for the password.
    for dname, dep in of_kind(objs, "Deployment").items():
        ref = cfg.get("EXSF_KAFKA_SASL_PASSWORD_REF", "")
        parent = ref.removeprefix("file:").rpartition("/")[0]
        mounted = secret_volume_files(dep).get(parent)
        if mounted is None or mounted[0] != user["metadata"]["name"]:
            problems.append(f"{dname}: the password file must come from the KafkaUser's Secret")
    return problems


def keda_problems(objs: list[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    deps = of_kind(objs, "Deployment")
    auths = of_kind(objs, "TriggerAuthentication")
    cfg = config(objs)
    targets: dict[str, dict[str, Any]] = {}
    for name, so in of_kind(objs, "ScaledObject").items():
        ref = so["spec"]["scaleTargetRef"]
        target = ref.get("name")
        if ref.get("kind", "Deployment") != "Deployment" or target not in deps:
            problems.append(f"ScaledObject {name} targets missing Deployment {target}")
            continue
        targets[target] = so
        svc = service_of(deps[target])
        if so["spec"].get("minReplicaCount", 0) < 1 or so["spec"].get("maxReplicaCount") != partitions(objs):
            problems.append(f"ScaledObject {name}: replicas must be 1..EXSF_PARTITIONS ({partitions(objs)})")
        topics = set()
        for trig in so["spec"].get("triggers") or []:
            md = trig.get("metadata") or {}
            topics.add(md.get("topic"))
            group = Namespace(prefix_of(objs)).group(svc or "")
            if trig.get("type") != "kafka" or md.get("consumerGroup") != group:
                problems.append(f"ScaledObject {name}: kafka trigger on consumer group {group} expected")
            if not str(md.get("lagThreshold", "")).isdigit() or int(md["lagThreshold"]) <= 0:
                problems.append(f"ScaledObject {name}: lagThreshold must be a positive integer")
            if md.get("bootstrapServersFromEnv") not in cfg and not md.get("bootstrapServers"):
                problems.append(f"ScaledObject {name}: bootstrap servers unresolvable")
            boot = cfg.get(md.get("bootstrapServersFromEnv", ""), md.get("bootstrapServers", ""))
            hosts = [h.rsplit(":", 1)[0] for h in str(boot).split(",")]
            if any(not h.endswith(".svc") for h in hosts):
                # KEDA's operator dials these from its own namespace: short names miss.
                problems.append(f"ScaledObject {name}: bootstrap {boot} must be <svc>.<namespace>.svc:port")
            ns = so["metadata"].get("namespace")
            if ns and any(h.endswith(".svc") and h.split(".")[-2] != ns for h in hosts):
                # The Strimzi cluster lives in exsf's namespace (README): a rendered namespace
                # other than the one in the address means the overlay moved exsf, not Kafka.
                problems.append(f"ScaledObject {name}: bootstrap {boot} is not in namespace {ns}")
            auth = auths.get((trig.get("authenticationRef") or {}).get("name"))
            if auth is None:
                problems.append(f"ScaledObject {name}: authenticationRef names no TriggerAuthentication")
                continue
            mounted = {sec for sec, _ in secret_volume_files(deps[target]).values()}
            for sref in auth["spec"].get("secretTargetRef") or []:
                if sref["name"] not in mounted:
                    problems.append(f"TriggerAuthentication: Secret {sref['name']} is not the one {target} uses")
            for eref in auth["spec"].get("env") or []:
                if eref["name"] not in env_of(deps[target], objs):
                    problems.append(f"TriggerAuthentication: env {eref['name']} not set on {target}")
        want = consumed(svc or "", prefix_of(objs))
        if topics != want:
            problems.append(f"ScaledObject {name}: triggers on {topics}, {svc} consumes {want}")
    consumers = {n for n, d in deps.items() if service_of(d) in CONSUMED}
    if set(targets) != consumers:
        problems.append(f"ScaledObjects target {sorted(targets)}, consumer services are {sorted(consumers)}")
    for name, dep in deps.items():
        if name in targets and "replicas" in dep["spec"]:
            problems.append(f"{name}: scaled by KEDA, spec.replicas would fight the HPA on every apply")
        if name not in targets and not dep["spec"].get("replicas"):
            problems.append(f"{name}: not autoscaled, needs a fixed spec.replicas")
    return problems


def _port_matches(rule_ports: list[dict[str, Any]] | None, dep: dict[str, Any], port_name: str) -> bool:
    if not rule_ports:
        return True
    number = named_port(dep, port_name)
    return any(p.get("port") in (port_name, number) for p in rule_ports)


def network_problems(objs: list[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    policies = list(of_kind(objs, "NetworkPolicy").values())
    bootstrap_port = int(config(objs)["KAFKA_BOOTSTRAP_SERVERS"].split(",")[0].rsplit(":", 1)[1])

    def from_namespace(rule: dict[str, Any], ns: str) -> bool:
        peers = rule.get("from") or []
        return any((p.get("namespaceSelector") or {}).get("matchLabels", {}).get("kubernetes.io/metadata.name") == ns
                   for p in peers)

    for name, dep in of_kind(objs, "Deployment").items():
        mine = [p for p in policies if selects(p["spec"].get("podSelector", {}).get("matchLabels"), pod_labels(dep))]
        if not any("Ingress" in p["spec"].get("policyTypes", []) and not p["spec"].get("ingress") for p in mine):
            problems.append(f"{name}: no default-deny ingress policy selects it")
        ingress = [r for p in mine for r in p["spec"].get("ingress") or []]
        if not any(from_namespace(r, "monitoring") and _port_matches(r.get("ports"), dep, "metrics") for r in ingress):
            problems.append(f"{name}: metrics port not reachable from namespace monitoring")
        has_webhook = named_port(dep, "webhook") is not None
        webhook_open = any(from_namespace(r, "ingress-nginx") and _port_matches(r.get("ports"), dep, "webhook")
                           for r in ingress if r.get("ports"))
        if has_webhook != webhook_open:
            problems.append(f"{name}: webhook ingress from the ingress controller must be open iff it serves one")
        egress = [r for p in mine for r in p["spec"].get("egress") or []]
        ports = {(p.get("port"), p.get("protocol", "TCP")) for r in egress for p in r.get("ports") or []}
        for need in ((53, "UDP"), (bootstrap_port, "TCP"), (443, "TCP")):
            if need not in ports:
                problems.append(f"{name}: egress to port {need[0]}/{need[1]} not allowed")
    return problems


def ingress_problems(objs: list[dict[str, Any]]) -> list[str]:
    problems: list[str] = []
    services = of_kind(objs, "Service")
    deps = of_kind(objs, "Deployment")
    for name, ing in of_kind(objs, "Ingress").items():
        tls_hosts = {h for tls in ing["spec"].get("tls") or [] for h in tls.get("hosts") or []}
        paths = set()
        for rule in ing["spec"].get("rules") or []:
            if rule.get("host") not in tls_hosts:
                problems.append(f"Ingress {name}: host {rule.get('host')} is not covered by TLS")
            for p in (rule.get("http") or {}).get("paths") or []:
                paths.add(p["path"])
                backend = p["backend"]["service"]
                svc = services.get(backend["name"])
                if svc is None:
                    problems.append(f"Ingress {name}: backend Service {backend['name']} missing")
                    continue
                sport = [sp for sp in svc["spec"]["ports"] if sp.get("name") == backend["port"].get("name")
                         or sp.get("port") == backend["port"].get("number")]
                selected = [d for d in deps.values() if selects(svc["spec"].get("selector"), pod_labels(d))]
                if len(sport) != 1 or len(selected) != 1 or named_port(selected[0], sport[0]["targetPort"]) is None:
                    problems.append(f"Ingress {name}: {p['path']} does not reach a named container port of one "
                                    f"Deployment")
                elif service_of(selected[0]) != "ingest-exchange":
                    problems.append(f"Ingress {name}: routes to {service_of(selected[0])}, not ingest-exchange")
        if not {"/notifications", "/lifecycle"} <= paths:
            problems.append(f"Ingress {name}: paths {paths} must include /notifications and /lifecycle")
    if not of_kind(objs, "Ingress"):
        problems.append("no Ingress for the Graph webhook")
    return problems


def overlay_problems(b: Build) -> list[str]:
    """What kustomize accepts silently: `images` and `replicas` entries naming nothing (they
    are ignored), a generator merging into nothing, and a webhook URL that is not the
    Ingress host Graph must reach."""
    k = b.tree.kustomizations().get(Path(OVERLAY))
    if k is None:
        return [f"{OVERLAY} has no kustomization.yaml"]
    problems: list[str] = []
    if not k.get("namespace"):
        problems.append("overlay sets no namespace")
    base, rendered = b.rendered.get(BASE) or [], b.rendered.get(OVERLAY) or []
    if not base or not rendered:
        return [*problems, "base or overlay does not render"]
    deps = of_kind(base, "Deployment")
    images = {container(d)["image"].rsplit(":", 1)[0] for d in deps.values()}
    for img in k.get("images") or []:
        if img["name"] not in images:
            problems.append(f"overlay images: {img['name']} is used by no container ({images})")
    for r in k.get("replicas") or []:
        if r["name"] not in deps:
            problems.append(f"overlay replicas: no Deployment {r['name']}")
    base_cms = {n.rsplit("-", 1)[0] for n in of_kind(base, "ConfigMap")}
    for gen in k.get("configMapGenerator") or []:
        if gen.get("behavior") in ("merge", "replace") and gen["name"] not in base_cms:
            problems.append(f"overlay configMapGenerator merges into missing {gen['name']}")
    if any(o.get("metadata", {}).get("namespace") != k.get("namespace") for o in rendered):
        problems.append(f"overlay: not every object renders into namespace {k.get('namespace')}")
    # The public webhook URL ingest-exchange registers with Graph is the Ingress host.
    hosts = {r.get("host") for ing in of_kind(rendered, "Ingress").values() for r in ing["spec"].get("rules") or []}
    for name, dep in of_kind(rendered, "Deployment").items():
        if named_port(dep, "webhook") is not None:
            url = env_of(dep, rendered).get("EXSF_WEBHOOK_PUBLIC_URL", "")
            if urlparse(url).scheme != "https" or urlparse(url).hostname not in hosts:
                problems.append(f"overlay: {name} EXSF_WEBHOOK_PUBLIC_URL={url!r} is not https on Ingress host {hosts}")
    return problems


def _on_renders(check: Callable[[list[dict[str, Any]]], list[str]]) -> Callable[[Build], list[str]]:
    """A check of rendered objects, run on the base and on the example overlays."""

    def run(b: Build) -> list[str]:
        out: list[str] = []
        for kdir in RENDERS:
            if kdir in b.errors:
                out.append(f"{kdir}: does not render ({b.errors[kdir]})")
            else:
                out += [f"{kdir}: {p}" for p in check(b.rendered[kdir])]
        return out

    return run


CHECKS: dict[str, Callable[[Build], list[str]]] = {
    "kustomization": kustomization_problems,
    "deployments": _on_renders(deployment_problems),
    "secrets": secret_problems,
    "topics": _on_renders(topic_problems),
    "kafka_user": _on_renders(kafka_user_problems),
    "keda": _on_renders(keda_problems),
    "network": _on_renders(network_problems),
    "ingress": _on_renders(ingress_problems),
    "overlay": overlay_problems,
}


@pytest.mark.parametrize("check", sorted(CHECKS))
def test_manifests(real: Build, check: str) -> None:
    assert not real.errors
    assert CHECKS[check](real) == []


def test_every_yaml_file_parses_to_kubernetes_objects_or_patches(real: Build) -> None:
    assert len(real.tree.files) >= 10
    for path, docs in real.tree.files.items():
        assert docs, f"{path} is empty"
        for doc in docs:
            if isinstance(doc, dict) and path.name not in KUSTOMIZATION_NAMES:
                assert doc.get("kind") and (doc.get("metadata") or {}).get("name"), path


def test_rendered_output_is_what_the_checks_read(real: Build) -> None:
    """The checks see kustomize's output, not the files: the overlay's patches, generator
    merge and namespace are applied, and generated names carry their hash."""
    dep = of_kind(real.rendered[OVERLAY], "Deployment")["ingest-exchange"]
    assert dep["metadata"]["namespace"] == "exsf" and dep["spec"]["replicas"] == 3
    assert env_of(dep, real.rendered[OVERLAY])["EXSF_WEBHOOK_PUBLIC_URL"] == "https://exsf-webhook.example.com"
    ref = container(dep)["envFrom"][0]["configMapRef"]["name"]
    assert ref.startswith("exsf-config-") and ref in of_kind(real.rendered[OVERLAY], "ConfigMap")


def test_prefixed_overlay_grants_exactly_the_prefixed_names(real: Build) -> None:
    """components/topic-prefix: with EXSF_TOPIC_PREFIX=staging. the KafkaUser's ACLs cover
    every topic, group and transactional id the code names for that prefix and nothing of
    the unprefixed deployment; the base's ACLs would not do for it."""
    objs = real.rendered[PREFIXED]
    assert prefix_of(objs) == "staging."
    acls = of_kind(objs, "KafkaUser")["exsf"]["spec"]["authorization"]["acls"]
    n = partitions(objs)
    assert acl_problems(acls, "staging.", n) == []
    assert {(a["resource"]["type"], a["resource"]["name"], a["resource"]["patternType"]) for a in acls} == {
        ("topic", "staging.exsf.", "prefix"),
        ("group", "staging.exsf-", "prefix"),
        ("transactionalId", "staging.exsf-", "prefix"),
    }
    base_acls = of_kind(real.rendered[BASE], "KafkaUser")["exsf"]["spec"]["authorization"]["acls"]
    assert any(p.startswith("lacks") for p in acl_problems(base_acls, "staging.", n))
    names = kafka_names("staging.", n)
    assert "staging.exsf.changes.exchange" in names["topic"] and "staging.exsf-writer" in names["group"]
    assert "staging.exsf-reconciler-0" in names["transactionalId"]


def test_written_copy_renders_like_the_original(real: Build, tmp_path: Path) -> None:
    # The mutation tests render a YAML dump of the tree: it must render to the same objects.
    copy_ = build(real.tree.write(tmp_path))
    assert not copy_.errors
    assert copy_.rendered == real.rendered


# --- each check can fail -----------------------------------------------------------------


def _file(t: Tree, *parts: str) -> list[Any]:
    return t.files[Path(*parts)]


def _doc(t: Tree, kind: str, name: str) -> dict[str, Any]:
    return next(d for docs in t.files.values() for d in docs
                if isinstance(d, dict) and d.get("kind") == kind and d["metadata"]["name"] == name)


def _base_k(t: Tree) -> dict[str, Any]:
    return t.kustomizations()[Path(BASE)]


def _overlay_k(t: Tree) -> dict[str, Any]:
    return t.kustomizations()[Path(OVERLAY)]


def _drop_topic(t: Tree) -> None:
    docs = _file(t, "base", "kafka-topics.yaml")
    docs[:] = [d for d in docs if d["spec"]["topicName"] != "exsf.state"]


def _wrong_cleanup(t: Tree) -> None:
    _doc(t, "KafkaTopic", "exsf-cursors")["spec"]["config"]["cleanup.policy"] = "delete"


def _drop_pdb(t: Tree) -> None:
    docs = _file(t, "base", "pdb.yaml")
    docs[:] = [d for d in docs if d["metadata"]["name"] != "writer"]


def _readiness_on_other_port(t: Tree) -> None:
    container(_doc(t, "Deployment", "writer"))["readinessProbe"]["httpGet"]["port"] = 8080


def _no_ephemeral_limit(t: Tree) -> None:
    del container(_doc(t, "Deployment", "writer"))["resources"]["limits"]["ephemeral-storage"]


def _no_pre_stop(t: Tree) -> None:
    del container(_doc(t, "Deployment", "ingest-exchange"))["lifecycle"]


def _short_bootstrap(t: Tree) -> None:
    lits = _base_k(t)["configMapGenerator"][0]["literals"]
    lits[:] = [x for x in lits if not x.startswith("KAFKA_BOOTSTRAP_SERVERS=")]
    lits.append("KAFKA_BOOTSTRAP_SERVERS=exsf-kafka-kafka-bootstrap:9093")


def _unknown_command(t: Tree) -> None:
    container(_doc(t, "Deployment", "reconciler"))["command"] = ["exsf", "run", "reconcile"]


def _writable_root(t: Tree) -> None:
    container(_doc(t, "Deployment", "ingest-salesforce"))["securityContext"]["readOnlyRootFilesystem"] = False


def _secret_literal(t: Tree) -> None:
    _base_k(t)["configMapGenerator"][0]["literals"].append("EXSF_GRAPH_CLIENT_SECRET=s3cr3t")


def _secret_env(t: Tree) -> None:
    container(_doc(t, "Deployment", "writer"))["env"].append({"name": "SF_PASSWORD", "value": "hunter2"})


def _secret_with_data(t: Tree) -> None:
    _file(t, "base", "serviceaccount.yaml").append(
        {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}, "stringData": {"a": "b"}})


def _scaledobject_bad_target(t: Tree) -> None:
    _doc(t, "ScaledObject", "writer")["spec"]["scaleTargetRef"]["name"] = "writers"


def _scaledobject_wrong_group(t: Tree) -> None:
    _doc(t, "ScaledObject", "reconciler")["spec"]["triggers"][0]["metadata"]["consumerGroup"] = "exsf-writer"


def _replicas_on_keda_target(t: Tree) -> None:
    _doc(t, "Deployment", "writer")["spec"]["replicas"] = 2


def _no_txn_acl(t: Tree) -> None:
    acls = _doc(t, "KafkaUser", "exsf")["spec"]["authorization"]["acls"]
    acls[:] = [a for a in acls if a["resource"]["type"] != "transactionalId"]


def _prefixed_without_component(t: Tree) -> None:
    # EXSF_TOPIC_PREFIX set, but the ACLs (and topics, triggers) keep the unprefixed names.
    del t.kustomizations()[Path(PREFIXED)]["components"]


def _acl_whole_cluster_groups(t: Tree) -> None:
    acls = _doc(t, "KafkaUser", "exsf")["spec"]["authorization"]["acls"]
    next(a for a in acls if a["resource"]["type"] == "group")["resource"]["name"] = "ex"


def _acl_extra_operation(t: Tree) -> None:
    acls = _doc(t, "KafkaUser", "exsf")["spec"]["authorization"]["acls"]
    next(a for a in acls if a["resource"]["type"] == "topic")["operations"].append("Delete")


def _no_webhook_policy(t: Tree) -> None:
    docs = _file(t, "base", "networkpolicies.yaml")
    docs[:] = [d for d in docs if d["metadata"]["name"] != "exsf-allow-webhook"]


def _no_kafka_egress(t: Tree) -> None:
    egress = _doc(t, "NetworkPolicy", "exsf-allow-egress")["spec"]["egress"]
    egress[:] = [r for r in egress if all(p["port"] != 9093 for p in r["ports"])]


def _ingress_wrong_port(t: Tree) -> None:
    _doc(t, "Service", "ingest-exchange-webhook")["spec"]["ports"][0]["targetPort"] = "hook"


def _unlisted_resource(t: Tree) -> None:
    _base_k(t)["resources"].remove("pdb.yaml")


def _missing_resource(t: Tree) -> None:
    _base_k(t)["resources"].append("hpa.yaml")


def _overlay_patch_unknown_target(t: Tree) -> None:
    _file(t, "overlays", "example", "patches", "writer-resources.yaml")[0]["metadata"]["name"] = "writers"


def _overlay_json_patch_bad_path(t: Tree) -> None:
    _file(t, "overlays", "example", "patches", "webhook-host.yaml")[0][0]["path"] = "/spec/rules/3/host"


def _overlay_replicas_on_keda_target(t: Tree) -> None:
    _overlay_k(t)["replicas"].append({"name": "reconciler", "count": 3})


def _overlay_url_mismatch(t: Tree) -> None:
    env = _file(t, "overlays", "example", "patches", "webhook-public-url.yaml")[0]
    env["spec"]["template"]["spec"]["containers"][0]["env"][0]["value"] = "https://other.example.com"


def _overlay_image_typo(t: Tree) -> None:
    _overlay_k(t)["images"][0]["name"] = "ghcr.io/exsf/exfs"  # kustomize ignores it: the tag is not pinned


def _overlay_other_namespace(t: Tree) -> None:
    # exsf moved to another namespace while the bootstrap address still names Kafka's.
    _overlay_k(t)["namespace"] = "exsf-prod"


# Mutation -> (how it breaks the tree, the check that must report it). Those of check
# "kustomization" include the ones real kustomize rejects (the check reports its error);
# for every other check the broken tree must still render, so it is the semantic check
# that finds the fault, not a build failure.
MUTATIONS: dict[str, tuple[Callable[[Tree], None], str]] = {
    "drop_topic": (_drop_topic, "topics"),
    "wrong_cleanup": (_wrong_cleanup, "topics"),
    "drop_pdb": (_drop_pdb, "deployments"),
    "readiness_on_other_port": (_readiness_on_other_port, "deployments"),
    "unknown_command": (_unknown_command, "deployments"),
    "no_ephemeral_limit": (_no_ephemeral_limit, "deployments"),
    "no_pre_stop": (_no_pre_stop, "deployments"),
    "short_bootstrap": (_short_bootstrap, "keda"),
    "writable_root": (_writable_root, "deployments"),
    "secret_literal": (_secret_literal, "secrets"),
    "secret_env": (_secret_env, "secrets"),
    "secret_with_data": (_secret_with_data, "secrets"),
    "scaledobject_bad_target": (_scaledobject_bad_target, "keda"),
    "scaledobject_wrong_group": (_scaledobject_wrong_group, "keda"),
    "replicas_on_keda_target": (_replicas_on_keda_target, "keda"),
    "no_txn_acl": (_no_txn_acl, "kafka_user"),
    "prefixed_without_component": (_prefixed_without_component, "kafka_user"),
    "acl_whole_cluster_groups": (_acl_whole_cluster_groups, "kafka_user"),
    "acl_extra_operation": (_acl_extra_operation, "kafka_user"),
    "no_webhook_policy": (_no_webhook_policy, "network"),
    "no_kafka_egress": (_no_kafka_egress, "network"),
    "ingress_wrong_port": (_ingress_wrong_port, "ingress"),
    "unlisted_resource": (_unlisted_resource, "kustomization"),
    "missing_resource": (_missing_resource, "kustomization"),
    "overlay_patch_unknown_target": (_overlay_patch_unknown_target, "kustomization"),
    "overlay_json_patch_bad_path": (_overlay_json_patch_bad_path, "kustomization"),
    "overlay_replicas_on_keda_target": (_overlay_replicas_on_keda_target, "keda"),
    "overlay_url_mismatch": (_overlay_url_mismatch, "overlay"),
    "overlay_image_typo": (_overlay_image_typo, "overlay"),
    "overlay_other_namespace": (_overlay_other_namespace, "keda"),
}
RENDER_FAILURES = {"missing_resource", "overlay_patch_unknown_target", "overlay_json_patch_bad_path"}


def test_every_check_has_a_mutation() -> None:
    assert {check for _, check in MUTATIONS.values()} == set(CHECKS)


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_check_detects_mutation(real: Build, mutation: str) -> None:
    mutate, check = MUTATIONS[mutation]
    broken = copy.deepcopy(real.tree)
    mutate(broken)
    with tempfile.TemporaryDirectory() as tmp:
        b = build(broken.write(Path(tmp)))
        if mutation in RENDER_FAILURES:
            assert b.errors, "real kustomize accepted it"
        else:
            assert not b.errors, f"the broken copy must still render: {b.errors}"
        assert CHECKS[check](b) != []
