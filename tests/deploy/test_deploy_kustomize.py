"""deploy/k8s: every overlay and every combination of components builds with kustomize, validates
against the Kubernetes schemas (strict), and keeps the rules SREs rely on: probes, limits,
non-root, a PDB and an HPA per Deployment, Services that select a Deployment, network policies
that let each service be called only by its callers, and custom resources that fit together."""

from __future__ import annotations

import base64
import copy
import functools
import itertools
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from fte_console.settings import ConsoleSettings
from fte_runtime import topics
from fte_runtime.metrics import KAFKA_CONSUMED
from fte_stack.envoy import COLLECTOR_CLUSTER

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
ENVOY_CONFIG = REPO / "deploy" / "envoy" / "envoy.yaml"
OPERATIONS_DOC = REPO / "docs" / "operations.md"
COMPONENTS = tuple(sorted(p.name for p in (K8S / "components").iterdir() if (p / "kustomization.yaml").exists()))
OVERLAYS = tuple(sorted(p.name for p in (K8S / "overlays").iterdir() if (p / "kustomization.yaml").exists()))
SERVICES = ("knowledge", "identity", "notifier", "agent", "gateway", "console")
# Deployed like the others but owning no schema and reading no topic (no migrations Job).
STATELESS = ("mcp",)
GRPC_PORTS = {"knowledge": 50051, "identity": 50052, "notifier": 50053, "agent": 50054}
# The oldest Kubernetes the manifests target and the newest kubernetes-validate knows.
K8S_VERSIONS = ("1.30", "1.37")
# Their schemas do not ship with kubernetes-validate (they come with the operators' CRDs), so
# schema validation skips them; the tests at the end check their structure instead.
CUSTOM_GROUPS = ("kafka.strimzi.io", "postgresql.cnpg.io", "monitoring.coreos.com")
# Longest preStop plus margin a pod gets on top of its server's drain.
MARGIN_SECONDS = 5

Obj = dict[str, Any]


def tool(name: str) -> str:
    local = Path(sys.executable).parent / name
    found = str(local) if local.exists() else shutil.which(name)
    assert found, f"{name} not found: make setup installs it"
    return found


def kustomize(directory: Path) -> list[Obj]:
    result = subprocess.run(
        [tool("kubectl"), "kustomize", str(directory)], capture_output=True, text=True, timeout=120, check=False
    )
    assert result.returncode == 0, result.stderr
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


@functools.cache
def _built(target: str) -> tuple[Obj, ...]:
    if target.startswith("overlay:"):
        return tuple(kustomize(K8S / "overlays" / target.removeprefix("overlay:")))
    components = [] if target == "base" else target.removeprefix("base+").split("+")
    with tempfile.TemporaryDirectory() as tmp:
        # kustomize wants relative paths to other kustomizations.
        rel = Path(os.path.relpath(K8S, tmp))
        spec = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [str(rel / "base")],
            "components": [str(rel / "components" / c) for c in components],
        }
        (Path(tmp) / "kustomization.yaml").write_text(yaml.safe_dump(spec))
        return tuple(kustomize(Path(tmp)))


def built(target: str) -> list[Obj]:
    """A fresh copy: tests may change what they get."""
    return copy.deepcopy(list(_built(target)))


COMBOS = [c for n in range(len(COMPONENTS) + 1) for c in itertools.combinations(COMPONENTS, n)]
TARGETS = [f"overlay:{o}" for o in OVERLAYS] + ["base+" + "+".join(c) if c else "base" for c in COMBOS]
OVERLAY_TARGETS = [f"overlay:{o}" for o in OVERLAYS]


def test_layout_has_what_the_deploy_needs() -> None:
    assert set(COMPONENTS) == {"envoy", "kafka-strimzi", "monitoring", "network-policies", "postgres-cnpg"}
    assert set(OVERLAYS) == {"dev", "prod"}
    assert len(TARGETS) == len(OVERLAYS) + 2 ** len(COMPONENTS)


# -- helpers ----------------------------------------------------------------------------------


def of_kind(objs: list[Obj], kind: str) -> list[Obj]:
    return [o for o in objs if o["kind"] == kind]


def named(objs: list[Obj], kind: str, name: str) -> Obj:
    [found] = [o for o in objs if o["kind"] == kind and o["metadata"]["name"] == name]
    return found


def is_custom(obj: Obj) -> bool:
    return str(obj["apiVersion"]).split("/")[0] in CUSTOM_GROUPS


def pod_specs(objs: list[Obj]) -> Iterator[tuple[Obj, Obj]]:
    """(workload, pod template) of every Deployment, Job and CronJob."""
    for obj in objs:
        if obj["kind"] in ("Deployment", "Job"):
            yield obj, obj["spec"]["template"]
        elif obj["kind"] == "CronJob":
            yield obj, obj["spec"]["jobTemplate"]["spec"]["template"]


def selects(selector: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"only matchLabels selectors are modelled: {selector}"
    return all(labels.get(k) == v for k, v in selector.get("matchLabels", {}).items())


def config_value(objs: list[Obj], configmap_prefix: str, key: str) -> str | None:
    for cm in of_kind(objs, "ConfigMap"):
        if cm["metadata"]["name"].startswith(configmap_prefix) and key in cm.get("data", {}):
            value: str = cm["data"][key]
            return value
    return None


def pre_stop_seconds(container: Obj) -> float:
    pre_stop = container.get("lifecycle", {}).get("preStop")
    if not pre_stop:
        return 0
    if "sleep" in pre_stop:
        return float(pre_stop["sleep"]["seconds"])
    command = pre_stop["exec"]["command"]
    assert command[0] == "sleep", command
    return float(command[1])


# -- the rules, as functions that list what is wrong (so they can be shown to fail) ------------


def container_problems(where: str, pod: Obj, container: Obj) -> list[str]:
    problems = []
    pod_sc = pod.get("securityContext", {})
    sc = container.get("securityContext", {})
    if sc.get("runAsNonRoot", pod_sc.get("runAsNonRoot")) is not True:
        problems.append(f"{where}: runAsNonRoot is not set")
    if sc.get("runAsUser", pod_sc.get("runAsUser")) in (None, 0):
        problems.append(f"{where}: no non-zero runAsUser (the kubelet cannot check a named user)")
    if sc.get("readOnlyRootFilesystem") is not True:
        problems.append(f"{where}: root filesystem is writable")
    if sc.get("allowPrivilegeEscalation") is not False:
        problems.append(f"{where}: privilege escalation allowed")
    if sc.get("privileged"):
        problems.append(f"{where}: privileged")
    if sc.get("capabilities", {}).get("drop") != ["ALL"] or sc.get("capabilities", {}).get("add"):
        problems.append(f"{where}: capabilities not dropped to none")
    seccomp = sc.get("seccompProfile", pod_sc.get("seccompProfile", {}))
    if seccomp.get("type") != "RuntimeDefault":
        problems.append(f"{where}: seccomp profile is not RuntimeDefault")
    resources = container.get("resources", {})
    for kind in ("requests", "limits"):
        for res in ("cpu", "memory"):
            if res not in resources.get(kind, {}):
                problems.append(f"{where}: no {res} {kind[:-1] if kind == 'limits' else 'request'}")
    return problems


def deployment_problems(objs: list[Obj]) -> list[str]:
    problems = []
    pdbs = of_kind(objs, "PodDisruptionBudget")
    hpas = of_kind(objs, "HorizontalPodAutoscaler")
    accounts = {sa["metadata"]["name"]: sa for sa in of_kind(objs, "ServiceAccount")}
    for dep in of_kind(objs, "Deployment"):
        name = dep["metadata"]["name"]
        template = dep["spec"]["template"]
        pod = template["spec"]
        labels = template["metadata"]["labels"]
        if not selects(dep["spec"]["selector"], labels):
            problems.append(f"{name}: selector does not select its own pods")
        for c in pod["containers"]:
            where = f"{name}/{c['name']}"
            problems += container_problems(where, pod, c)
            for probe in ("readinessProbe", "livenessProbe"):
                if probe not in c:
                    problems.append(f"{where}: no {probe}")
            if name in GRPC_PORTS:
                ports = {p["name"]: p["containerPort"] for p in c.get("ports", [])}
                for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
                    if c.get(probe, {}).get("grpc", {}).get("port") != ports.get("grpc"):
                        problems.append(f"{where}: {probe} is not a native gRPC probe of the grpc port")
            grace = pod.get("terminationGracePeriodSeconds", 30)
            drain = float(config_value(objs, f"{name}-config", f"FTE_{name.upper()}_SHUTDOWN_GRACE_SECONDS") or 10)
            if grace < pre_stop_seconds(c) + drain + MARGIN_SECONDS:
                problems.append(f"{where}: terminationGracePeriodSeconds {grace} does not cover preStop + drain")
        matching = [p for p in pdbs if selects(p["spec"]["selector"], labels)]
        if not matching:
            problems.append(f"{name}: no PodDisruptionBudget selects its pods")
        for pdb in matching:
            if pdb["metadata"]["name"] != name:
                problems.append(f"{name}: PodDisruptionBudget {pdb['metadata']['name']} selects it")
        if not any(
            h["spec"]["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": name} for h in hpas
        ):
            problems.append(f"{name}: no HorizontalPodAutoscaler")
        if "replicas" in dep["spec"]:
            problems.append(f"{name}: sets replicas, which fights its HorizontalPodAutoscaler")
        account = accounts.get(pod.get("serviceAccountName", ""))
        if account is None:
            problems.append(f"{name}: its ServiceAccount is missing")
        elif account.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: its ServiceAccount mounts an API token")
    return problems


def service_problems(objs: list[Obj]) -> list[str]:
    problems = []
    deployments = of_kind(objs, "Deployment")
    for svc in of_kind(objs, "Service"):
        name = svc["metadata"]["name"]
        selector = svc["spec"].get("selector")
        if not selector:
            problems.append(f"service {name}: no selector")
            continue
        targets = [
            d for d in deployments if selects({"matchLabels": selector}, d["spec"]["template"]["metadata"]["labels"])
        ]
        if len(targets) != 1:
            problems.append(f"service {name}: selects {len(targets)} Deployments")
            continue
        container_ports = {
            p["name"] for c in targets[0]["spec"]["template"]["spec"]["containers"] for p in c.get("ports", [])
        }
        port_names = [p.get("name") for p in svc["spec"]["ports"]]
        if not {"grpc", "http"} & set(port_names):
            problems.append(f"service {name}: no port named grpc or http")
        for port in svc["spec"]["ports"]:
            if port.get("targetPort") not in container_ports:
                problems.append(f"service {name}: targetPort {port.get('targetPort')} is no container port")
    return problems


# -- builds and schemas -----------------------------------------------------------------------


@functools.cache
def schema_problem(obj_json: str, version: str) -> str | None:
    """Validation of one object (cached: the combinations share most objects)."""
    try:
        kubernetes_validate.validate(json.loads(obj_json), version, strict=True)
    except kubernetes_validate.ValidationError as err:
        return f"{'.'.join(str(p) for p in err.path)}: {err.message}"
    return None


@pytest.mark.parametrize("target", TARGETS)
def test_builds_and_validates_strictly(target: str) -> None:
    objs = built(target)
    kinds = {o["kind"] for o in objs}
    assert {"Deployment", "Service", "ServiceAccount", "HorizontalPodAutoscaler", "PodDisruptionBudget"} <= kinds
    problems = [
        f"{obj['kind']}/{obj['metadata']['name']} @{version}: {problem}"
        for obj in objs
        if not is_custom(obj)
        for version in K8S_VERSIONS
        if (problem := schema_problem(json.dumps(obj, sort_keys=True), version))
    ]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_cli_pipeline_accepts_each_overlay(overlay: str) -> None:
    """What an SRE runs: `kubectl kustomize DIR | kubernetes-validate --strict -`."""
    rendered = subprocess.run(
        [tool("kubectl"), "kustomize", str(K8S / "overlays" / overlay)],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    ).stdout
    result = subprocess.run(
        [tool("kubernetes-validate"), "--strict", "-"],
        input=rendered,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("INFO") and "passed for resource deployment/knowledge " in line for line in lines)
    assert not [line for line in lines if line.startswith(("ERROR", "FATAL"))]
    # The only schemas it lacks are the operators' custom resources.
    for line in lines:
        if line.startswith("WARN"):
            assert any(f"api version {group}/" in line for group in CUSTOM_GROUPS), line


def test_schema_validation_can_fail() -> None:
    [dep] = [o for o in built("base") if o["kind"] == "Deployment" and o["metadata"]["name"] == "knowledge"]
    dep["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["grpcc"] = {"port": 1}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(dep, K8S_VERSIONS[-1], strict=True)


# -- workloads --------------------------------------------------------------------------------


@pytest.mark.parametrize("target", TARGETS)
def test_every_deployment_is_probed_limited_non_root_and_budgeted(target: str) -> None:
    objs = built(target)
    assert not deployment_problems(objs), "\n".join(deployment_problems(objs))


@pytest.mark.parametrize("target", OVERLAY_TARGETS)
def test_every_job_and_cronjob_pod_is_hardened(target: str) -> None:
    objs = built(target)
    problems = []
    for workload, template in pod_specs(objs):
        if workload["kind"] == "Deployment":
            continue
        pod = template["spec"]
        for c in pod["containers"]:
            problems += container_problems(f"{workload['metadata']['name']}/{c['name']}", pod, c)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        (lambda c, pod, objs: c.pop("readinessProbe"), "no readinessProbe"),
        (lambda c, pod, objs: c.update(livenessProbe={"tcpSocket": {"port": "grpc"}}), "not a native gRPC probe"),
        (lambda c, pod, objs: c["resources"].pop("limits"), "no cpu limit"),
        (lambda c, pod, objs: c["securityContext"].update(runAsNonRoot=False), "runAsNonRoot"),
        (lambda c, pod, objs: c["securityContext"].update(readOnlyRootFilesystem=False), "writable"),
        (lambda c, pod, objs: pod.update(terminationGracePeriodSeconds=10), "terminationGracePeriodSeconds"),
        (
            lambda c, pod, objs: objs.remove(named(objs, "PodDisruptionBudget", "knowledge")),
            "no PodDisruptionBudget",
        ),
    ],
)
def test_the_deployment_rules_catch_a_regression(change: Any, complaint: str) -> None:
    objs = built("base")
    assert not deployment_problems(objs)
    pod = named(objs, "Deployment", "knowledge")["spec"]["template"]["spec"]
    change(pod["containers"][0], pod, objs)
    assert any(complaint in p for p in deployment_problems(objs))


@pytest.mark.parametrize("target", TARGETS)
def test_every_service_selects_a_deployment_port(target: str) -> None:
    objs = built(target)
    assert not service_problems(objs), "\n".join(service_problems(objs))


def test_the_service_rule_catches_a_wrong_selector() -> None:
    objs = built("base")
    named(objs, "Service", "identity")["spec"]["selector"] = {"app.kubernetes.io/name": "identiy"}
    assert service_problems(objs) == ["service identity: selects 0 Deployments"]


def test_grpc_services_are_headless_and_ports_agree() -> None:
    objs = built("overlay:prod")
    for svc, port in GRPC_PORTS.items():
        service = named(objs, "Service", svc)
        assert service["spec"]["clusterIP"] == "None", "Envoy balances per call over every pod"
        assert {p["name"]: p["port"] for p in service["spec"]["ports"]}["grpc"] == port
        [container] = named(objs, "Deployment", svc)["spec"]["template"]["spec"]["containers"]
        assert {p["name"]: p["containerPort"] for p in container["ports"]}["grpc"] == port
        assert config_value(objs, f"{svc}-config", f"FTE_{svc.upper()}_GRPC_PORT") == str(port)
        assert config_value(objs, f"{svc}-config", f"FTE_{svc.upper()}_GRPC_HOST") == "0.0.0.0"


def test_migrations_job_per_schema_and_the_gmail_watch_cronjob() -> None:
    objs = built("overlay:prod")
    for svc in SERVICES:
        [container] = named(objs, "Deployment", svc)["spec"]["template"]["spec"]["containers"]
        job = named(objs, "Job", f"{svc}-migrate")
        [migrate] = job["spec"]["template"]["spec"]["containers"]
        assert migrate["image"] == container["image"]
        assert migrate["args"] == ["migrate"]
        assert job["spec"]["template"]["spec"]["restartPolicy"] == "Never"
        assert any(e["name"] == f"FTE_{svc.upper()}_DATABASE_URL" for e in migrate["env"])
    cron = named(objs, "CronJob", "gateway-gmail-watch")
    [watch] = cron["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"]
    assert watch["args"] == ["gmail-watch"]
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    minute, hour, dom, month, dow = cron["spec"]["schedule"].split()
    assert minute.isdigit()
    assert hour.isdigit()
    assert (dom, month, dow) == ("*", "*", "*"), "daily"


@pytest.mark.parametrize("svc", SERVICES + STATELESS)
def test_container_commands_exist_in_the_service(svc: str) -> None:
    """The args the manifests pass are commands of the real `python -m fte_<svc>`."""
    result = subprocess.run(
        [sys.executable, "-m", f"fte_{svc}", "--help"], capture_output=True, text=True, timeout=120, check=False
    )
    if "No module named" in result.stderr:
        pytest.skip(f"fte_{svc} is not installed")
    assert result.returncode == 0, result.stderr
    objs = built("overlay:prod")
    commands = {
        c["args"][0]
        for workload, template in pod_specs(objs)
        for c in template["spec"]["containers"]
        if c["image"].rsplit("/", 1)[-1].startswith(f"fte-{svc}:")
    }
    assert ({"serve"} if svc in STATELESS else {"serve", "migrate"}) <= commands
    for command in commands:
        assert re.search(rf"\b{re.escape(command)}\b", result.stdout), f"fte_{svc} has no '{command}' command"


# -- configuration and secrets ----------------------------------------------------------------


def references(objs: list[Obj]) -> Iterator[tuple[str, str, str, bool]]:
    """(workload, kind, name, optional) of every ConfigMap and Secret a pod refers to."""
    for workload, template in pod_specs(objs):
        wname = workload["metadata"]["name"]
        pod = template["spec"]
        for c in pod["containers"]:
            for src in c.get("envFrom", []):
                for key, kind in (("configMapRef", "ConfigMap"), ("secretRef", "Secret")):
                    if key in src:
                        yield wname, kind, src[key]["name"], bool(src[key].get("optional"))
            for env in c.get("env", []):
                for key, kind in (("configMapKeyRef", "ConfigMap"), ("secretKeyRef", "Secret")):
                    ref = env.get("valueFrom", {}).get(key)
                    if ref:
                        yield wname, kind, ref["name"], bool(ref.get("optional"))
        for vol in pod.get("volumes", []):
            if "secret" in vol:
                yield wname, "Secret", vol["secret"]["secretName"], bool(vol["secret"].get("optional"))
            if "configMap" in vol:
                yield wname, "ConfigMap", vol["configMap"]["name"], bool(vol["configMap"].get("optional"))


def test_dev_overlay_provides_every_config_and_secret() -> None:
    objs = built("overlay:dev")
    have = {(o["kind"], o["metadata"]["name"]) for o in objs}
    missing = {(w, k, n) for w, k, n, optional in references(objs) if not optional and (k, n) not in have}
    assert not missing
    for svc in SERVICES:
        secret = named(objs, "Secret", f"{svc}-postgres")
        assert secret["type"] == "kubernetes.io/basic-auth"


def secret_data(objs: list[Obj], prefix: str) -> dict[str, str]:
    [secret] = [o for o in of_kind(objs, "Secret") if o["metadata"]["name"].startswith(prefix)]
    return {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}


def test_dev_callers_tokens_are_accepted_by_their_callees() -> None:
    objs = built("overlay:dev")
    callers = {
        "agent": ("FTE_AGENT_SERVICE_TOKEN", ("knowledge", "identity", "notifier")),
        "gateway": ("FTE_GATEWAY_SERVICE_TOKEN", ("agent",)),
        "console": ("FTE_CONSOLE_SERVICE_TOKEN", ("agent", "identity")),
    }
    for caller, (key, callees) in callers.items():
        token = secret_data(objs, f"{caller}-secrets-")[key]
        for callee in callees:
            grants = json.loads(secret_data(objs, f"{callee}-auth-tokens-")["tokens.json"])
            assert grants[token]["principal"] == caller, f"{callee} does not know {caller}'s token"
            assert grants[token]["scopes"], callee
    # The MCP server holds no token: each grant it knows is the one its callees hold for that token.
    mcp = json.loads(secret_data(objs, "mcp-auth-tokens-")["tokens.json"])
    callee_of = {"kb": "knowledge", "identity": "identity", "tickets": "agent"}
    assert {g["principal"] for g in mcp.values()} >= {"assistant-reader", "kb-reader"}
    for token, grant in mcp.items():
        for scope in grant["scopes"]:
            held = json.loads(secret_data(objs, f"{callee_of[scope.split('.')[0]]}-auth-tokens-")["tokens.json"])
            assert held[token]["principal"] == grant["principal"], (token, scope)
            assert scope in held[token]["scopes"], (grant["principal"], scope)
    assert not [c for c in references(objs) if c[0] == "mcp" and c[2].startswith("mcp-secrets")]
    # Only the callers listed: the gateway cannot call knowledge directly.
    knowledge = json.loads(secret_data(objs, "knowledge-auth-tokens-")["tokens.json"])
    assert "gateway" not in {g["principal"] for g in knowledge.values()}


def test_prod_secrets_are_the_documented_ones() -> None:
    """Prod keeps no secret in git: each Secret it needs is named in docs/operations.md."""
    objs = built("overlay:prod")
    assert not of_kind(objs, "Secret")
    have = {(o["kind"], o["metadata"]["name"]) for o in objs}
    needed = {n for _, k, n, _ in references(objs) if k == "Secret"} | {
        r["passwordSecret"]["name"] for r in named(objs, "Cluster", "fte-postgres")["spec"]["managed"]["roles"]
    }
    assert not {(w, k, n) for w, k, n, _ in references(objs) if k == "ConfigMap" and (k, n) not in have}
    doc = OPERATIONS_DOC.read_text()
    undocumented = sorted(n for n in needed if f"`{n}`" not in doc)
    assert not undocumented, f"Secrets missing from docs/operations.md: {undocumented}"


# -- network policies -------------------------------------------------------------------------


def workloads(objs: list[Obj]) -> dict[str, dict[str, str]]:
    return {w["metadata"]["name"]: t["metadata"]["labels"] for w, t in pod_specs(objs)}


def allowed_sources(objs: list[Obj], target: str, port: str) -> set[str]:
    """Who may open `port` on the target's pods: workload names, 'ns:k=v' for a namespace
    selector, '*' for anyone (the NetworkPolicy ingress semantics, for matchLabels selectors)."""
    pods = workloads(objs)
    labels = pods[target]
    policies = [
        p
        for p in of_kind(objs, "NetworkPolicy")
        if "Ingress" in p["spec"].get("policyTypes", ["Ingress"]) and selects(p["spec"]["podSelector"], labels)
    ]
    if not policies:
        return {"*"}
    sources: set[str] = set()
    for policy in policies:
        for rule in policy["spec"].get("ingress", []):
            ports = {str(p["port"]) for p in rule.get("ports", [])}
            if ports and port not in ports:
                continue
            if "from" not in rule:
                sources.add("*")
                continue
            for peer in rule["from"]:
                if "namespaceSelector" in peer:
                    assert "podSelector" not in peer
                    sources |= {f"ns:{k}={v}" for k, v in peer["namespaceSelector"]["matchLabels"].items()}
                else:
                    sources |= {name for name, pod in pods.items() if selects(peer["podSelector"], pod)}
    return sources


def test_each_service_is_reachable_only_from_its_callers() -> None:
    objs = built("base+envoy+network-policies")
    assert allowed_sources(objs, "gateway", "http") == {"*"}
    # The staff console: only from the staff ingress, and it reaches the mesh only through Envoy.
    assert allowed_sources(objs, "console", "http") == {"ns:fte.io/staff-ingress=true"}
    # The MCP server: only from internal teams' namespaces, and it too reaches the mesh through Envoy.
    assert allowed_sources(objs, "mcp", "http") == {"ns:fte.io/mcp-client=true"}
    assert allowed_sources(objs, "mcp", "metrics") == {"ns:kubernetes.io/metadata.name=monitoring"}
    assert allowed_sources(objs, "envoy", "grpc") == {
        "gateway",
        "agent",
        "console",
        "mcp",
        "ns:fte.io/grpc-client=true",
    }
    for svc in GRPC_PORTS:
        assert allowed_sources(objs, svc, "grpc") == {"envoy"}, svc
        assert allowed_sources(objs, svc, "metrics") == {"ns:kubernetes.io/metadata.name=monitoring"}, svc
    # Jobs serve nothing: nobody may connect to them.
    assert allowed_sources(objs, "knowledge-migrate", "grpc") == set()
    assert allowed_sources(objs, "gateway-gmail-watch", "http") == set()
    # The model of the policies can tell an open cluster from a closed one.
    assert allowed_sources(built("base+envoy"), "knowledge", "grpc") == {"*"}


def test_envoy_is_the_checked_in_config_and_routes_to_the_services() -> None:
    objs = built("overlay:prod")
    [cm] = [c for c in of_kind(objs, "ConfigMap") if c["metadata"]["name"].startswith("envoy-config")]
    assert cm["data"]["envoy.yaml"] == ENVOY_CONFIG.read_text()
    pod = named(objs, "Deployment", "envoy")["spec"]["template"]["spec"]
    [container] = pod["containers"]
    config_path = container["args"][container["args"].index("--config-path") + 1]
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "config"]
    assert config_path == f"{mount['mountPath']}/envoy.yaml"
    [volume] = [v for v in pod["volumes"] if v["name"] == "config"]
    assert volume["configMap"]["name"] == cm["metadata"]["name"]
    envoy = yaml.safe_load(ENVOY_CONFIG.read_text())
    listen = envoy["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"]
    assert {p["name"]: p["port"] for p in named(objs, "Service", "envoy")["spec"]["ports"]}["grpc"] == listen
    for cluster in envoy["static_resources"]["clusters"]:
        if cluster["name"] == COLLECTOR_CLUSTER:
            continue  # the operator's OpenTelemetry collector, not part of these manifests (docs: Traces)
        address = cluster["load_assignment"]["endpoints"][0]["lb_endpoints"][0]["endpoint"]["address"]
        host, port = address["socket_address"]["address"], address["socket_address"]["port_value"]
        service = named(objs, "Service", host)
        assert port in {p["port"] for p in service["spec"]["ports"]}
    assert config_value(objs, "agent-config", "FTE_AGENT_KNOWLEDGE_TARGET") == f"envoy:{listen}"
    assert config_value(objs, "gateway-config", "FTE_GATEWAY_AGENT_TARGET") == f"envoy:{listen}"
    for target in ("AGENT", "IDENTITY"):
        assert config_value(objs, "console-config", f"FTE_CONSOLE_{target}_TARGET") == f"envoy:{listen}"
    for target in ("KNOWLEDGE", "IDENTITY", "AGENT"):
        assert config_value(objs, "mcp-config", f"FTE_MCP_{target}_TARGET") == f"envoy:{listen}"


# -- custom resources: Strimzi and CloudNativePG ----------------------------------------------


@pytest.mark.parametrize("target", OVERLAY_TARGETS)
def test_kafka_is_kraft_with_every_topic_and_its_dead_letter_twin(target: str) -> None:
    objs = built(target)
    [kafka] = of_kind(objs, "Kafka")
    name = kafka["metadata"]["name"]
    assert kafka["apiVersion"] == "kafka.strimzi.io/v1beta2"
    assert kafka["metadata"]["annotations"]["strimzi.io/kraft"] == "enabled"
    assert kafka["metadata"]["annotations"]["strimzi.io/node-pools"] == "enabled"
    assert "zookeeper" not in kafka["spec"]
    pools = [p for p in of_kind(objs, "KafkaNodePool") if p["metadata"]["labels"]["strimzi.io/cluster"] == name]
    roles = {r for p in pools for r in p["spec"]["roles"]}
    assert roles == {"controller", "broker"}
    brokers = sum(p["spec"]["replicas"] for p in pools if "broker" in p["spec"]["roles"])
    config = kafka["spec"]["kafka"]["config"]
    assert config["auto.create.topics.enable"] is False
    assert config["min.insync.replicas"] <= config["default.replication.factor"] <= brokers
    assert config["offsets.topic.replication.factor"] <= brokers
    [plain] = [lis for lis in kafka["spec"]["kafka"]["listeners"] if lis["name"] == "plain"]
    bootstrap = f"{name}-kafka-bootstrap:{plain['port']}"
    for svc in SERVICES:
        assert config_value(objs, f"{svc}-config", f"FTE_{svc.upper()}_KAFKA_BOOTSTRAP") == bootstrap
    kafka_topics = of_kind(objs, "KafkaTopic")
    expected = set(topics.ALL) | {topics.dead_letter_topic(t) for t in topics.ALL} | {topics.DLQ_REPLAYS}
    assert {t["spec"]["topicName"] for t in kafka_topics} == expected
    partitions = {t["spec"]["topicName"]: t["spec"]["partitions"] for t in kafka_topics}
    for topic in kafka_topics:
        spec = topic["spec"]
        assert topic["metadata"]["labels"]["strimzi.io/cluster"] == name
        assert re.fullmatch(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?", topic["metadata"]["name"])
        assert 1 <= int(spec["config"]["min.insync.replicas"]) <= spec["replicas"] <= brokers
        assert spec["partitions"] >= 1
    # More agents than partitions of the incoming stream would sit idle.
    assert named(objs, "HorizontalPodAutoscaler", "agent")["spec"]["maxReplicas"] <= partitions[topics.TICKETS_INCOMING]


def test_alerts_watch_the_metrics_the_services_export() -> None:
    objs = built("base+kafka-strimzi+monitoring")
    [rule] = of_kind(objs, "PrometheusRule")
    alerts = {r["alert"]: r for g in rule["spec"]["groups"] for r in g["rules"]}
    assert set(alerts) == {
        "FteRecordsDeadLettered",
        "FteDeadLettersGrowing",
        "FteRecordsRetrying",
        "FteConsumerLag",
        "FteConsumerStalled",
    }
    # The counter (and its outcome label value) every consumer increments on a dead letter.
    assert [family.name for family in KAFKA_CONSUMED.describe()] == ["kafka_consumed"]
    assert '"dead_lettered"' in (REPO / "libs" / "fte_runtime" / "kafka.py").read_text()
    for name in ("FteRecordsDeadLettered", "FteDeadLettersGrowing"):
        assert 'kafka_consumed_total{outcome="dead_lettered"}' in alerts[name]["expr"]
    # A record retried without end (transient failures are never dead-lettered) holds its partition.
    assert 'kafka_consumed_total{outcome="retried"}' in alerts["FteRecordsRetrying"]["expr"]
    assert alerts["FteRecordsRetrying"]["for"]
    # Lag comes from Strimzi's Kafka Exporter, which the Kafka resource turns on for our topics;
    # the console's per-process live groups (abandoned at every restart) are left out.
    for name in ("FteConsumerLag", "FteConsumerStalled"):
        assert "kafka_consumergroup_lag" in alerts[name]["expr"]
        assert 'consumergroup!~"fte-console-live-.*"' in alerts[name]["expr"]
    assert ConsoleSettings.model_fields["live_group_prefix"].default == "fte-console-live"
    assert "kafka_consumergroup_current_offset" in alerts["FteConsumerStalled"]["expr"]
    [kafka] = of_kind(objs, "Kafka")
    assert re.fullmatch(kafka["spec"]["kafkaExporter"]["topicRegex"], topics.TICKETS_INCOMING)
    for alert in alerts.values():
        assert alert["annotations"]["runbook"].startswith("docs/operations.md#")
        anchor = alert["annotations"]["runbook"].split("#", 1)[1].split(":", 1)[0]
        headings = re.findall(r"^## (.+)$", OPERATIONS_DOC.read_text(), re.MULTILINE)
        assert anchor in {h.lower().replace(" ", "-") for h in headings}


@pytest.mark.parametrize("target", OVERLAY_TARGETS)
def test_postgres_cluster_has_pgvector_and_a_role_per_service(target: str) -> None:
    objs = built(target)
    [cluster] = of_kind(objs, "Cluster")
    assert cluster["apiVersion"] == "postgresql.cnpg.io/v1"
    spec = cluster["spec"]
    assert spec["instances"] >= 1
    assert spec["storage"]["size"]
    initdb = spec["bootstrap"]["initdb"]
    assert initdb["database"] == config_value(objs, "fte-database", "database")
    assert config_value(objs, "fte-database", "host") == f"{cluster['metadata']['name']}-rw"
    sql = initdb["postInitApplicationSQL"]
    assert "CREATE EXTENSION IF NOT EXISTS vector" in sql
    roles = {r["name"]: r for r in spec["managed"]["roles"]}
    assert set(roles) == set(SERVICES)
    for svc, role in roles.items():
        assert role["ensure"] == "present"
        assert role["login"] is True
        assert role["passwordSecret"]["name"] == f"{svc}-postgres"
        assert f"CREATE SCHEMA {svc} AUTHORIZATION {svc}" in sql
        # The service logs in with the same Secret the operator sets the password from.
        [container] = named(objs, "Deployment", svc)["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env["PGPASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == f"{svc}-postgres"
        assert "$(PGPASSWORD)" in env[f"FTE_{svc.upper()}_DATABASE_URL"]["value"]
    if target == "overlay:prod":
        assert spec["instances"] >= 3
