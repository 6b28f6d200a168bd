"""The deployment files: docker-compose.yml and the Kubernetes manifests in deploy/k8s.

No Docker engine or cluster runs here, so these checks read the files (the fields each
kind requires, the wiring between them, the properties videoq depends on) and run
every command the files start, by hand, against a real Redis.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from worker.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
DEFAULTS = Settings()


def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


def manifests() -> list[dict[str, Any]]:
    docs: list[dict[str, Any]] = []
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    for name in kustomization["resources"]:
        docs.extend(d for d in yaml.safe_load_all((K8S / name).read_text()) if d)
    return docs


def by_kind(kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in manifests() if d["kind"] == kind}


def containers(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return list(doc["spec"]["template"]["spec"]["containers"])


# --- docker compose ----------------------------------------------------------------------


def test_compose_flower_has_auth_and_persistent_state_and_no_beat_is_needed() -> None:
    services = compose()["services"]
    flower = services["flower"]
    assert flower["command"][:2] == ["videoq", "flower"]
    env = flower["environment"]
    assert env["VIDEOQ_FLOWER_BASIC_AUTH"].startswith("${VIDEOQ_FLOWER_BASIC_AUTH:?")
    assert env["VIDEOQ_FLOWER_DB"].startswith("/data/")
    assert any(str(v).endswith(":/data") for v in flower["volumes"])
    assert all(p.startswith("127.0.0.1:") for p in flower["ports"])
    # the sweeper runs in every worker: no beat service, so nothing to keep at one replica
    commands = [" ".join(map(str, s.get("command", []))) for s in services.values()]
    assert not any(" beat" in c for c in commands)
    worker = services["worker"]
    assert "worker@$$HOSTNAME" in worker["healthcheck"]["test"][1]
    assert "-n" in worker["command"] and "worker@%h" in worker["command"]
    grace = int(worker["stop_grace_period"].rstrip("s"))
    assert grace > DEFAULTS.http_connect_timeout + DEFAULTS.http_read_timeout
    assert services["metrics"]["command"][:2] == ["videoq", "metrics"]


def _compose_env(redis_url: str) -> dict[str, str]:
    return {
        **os.environ,
        "VIDEOQ_REDIS_URL": redis_url,
        "VIDEOQ_FLOWER_BASIC_AUTH": "ops:x",
        "VIDEOQ_KEY_PREFIX": "deploytest",
        "VIDEOQ_QUEUE": "deploytest",
    }


@pytest.mark.parametrize("service", ["worker", "flower", "metrics", "simulator"])
def test_every_compose_command_runs(service: str, redis_url: str) -> None:
    """Each service's command, run here with --help: it parses its own arguments."""
    command = [str(c) for c in compose()["services"][service]["command"]]
    script = Path(sys.executable).with_name(command[0])
    done = subprocess.run(
        [str(script), *command[1:], "--help"],
        env=_compose_env(redis_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "usage" in done.stdout.lower()


def test_the_health_checks_run(redis_url: str) -> None:
    script = Path(sys.executable).with_name("videoq")
    ok = subprocess.run(
        [str(script), "health"],
        env=_compose_env(redis_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert (ok.returncode, ok.stdout.strip()) == (0, "ok"), ok.stderr
    missing = subprocess.run(
        [str(script), "health", "--worker", "nobody@nowhere", "--timeout", "1"],
        env=_compose_env(redis_url),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert missing.returncode == 1 and "did not answer" in missing.stderr
    down = subprocess.run(
        [str(script), "health"],
        env=_compose_env("redis://127.0.0.1:9/0"),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert down.returncode == 3 and "unreachable" in down.stderr


def test_flower_refuses_a_public_address_without_auth(redis_url: str) -> None:
    env = {k: v for k, v in _compose_env(redis_url).items() if k != "VIDEOQ_FLOWER_BASIC_AUTH"}
    script = Path(sys.executable).with_name("videoq")
    done = subprocess.run(
        [str(script), "flower", "--host", "0.0.0.0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "without authentication" in done.stderr


# --- Kubernetes ----------------------------------------------------------------------------

REQUIRED = {
    "Deployment": [
        "spec.selector.matchLabels",
        "spec.template.metadata.labels",
        "spec.template.spec.containers",
    ],
    "StatefulSet": [
        "spec.selector.matchLabels",
        "spec.serviceName",
        "spec.template.spec.containers",
    ],
    "Service": ["spec.selector", "spec.ports"],
    "ConfigMap": ["data"],
    "Secret": ["stringData"],
    "PersistentVolumeClaim": ["spec.accessModes", "spec.resources.requests.storage"],
    "ScaledObject": ["spec.scaleTargetRef.name", "spec.triggers"],
    "Namespace": [],
}


def _get(doc: dict[str, Any], path: str) -> Any:
    value: Any = doc
    for part in path.split("."):
        assert isinstance(value, dict) and part in value, f"{doc['kind']} lacks {path}"
        value = value[part]
    return value


def test_every_manifest_has_the_fields_its_kind_requires() -> None:
    docs = manifests()
    assert docs
    for doc in docs:
        assert doc.get("apiVersion") and doc.get("kind") and doc["metadata"].get("name")
        assert doc["kind"] in REQUIRED, f"unchecked kind {doc['kind']}"
        for path in REQUIRED[doc["kind"]]:
            assert _get(doc, path) not in (None, "", [], {})
        if doc["kind"] in ("Deployment", "StatefulSet"):
            selector = doc["spec"]["selector"]["matchLabels"]
            labels = doc["spec"]["template"]["metadata"]["labels"]
            assert selector.items() <= labels.items(), doc["metadata"]["name"]
            for c in containers(doc):
                assert c.get("name") and c.get("image")
    services = by_kind("Service")
    workloads = {**by_kind("Deployment"), **by_kind("StatefulSet")}
    for name, svc in services.items():
        assert any(
            svc["spec"]["selector"].items() <= w["spec"]["template"]["metadata"]["labels"].items()
            for w in workloads.values()
        ), f"Service {name} selects no workload"


def test_worker_deployment_probes_grace_and_config() -> None:
    worker = by_kind("Deployment")["videoq-worker"]
    spec = worker["spec"]["template"]["spec"]
    assert spec["terminationGracePeriodSeconds"] > (
        DEFAULTS.http_connect_timeout + DEFAULTS.http_read_timeout
    )
    [container] = containers(worker)
    assert container["command"][:2] == ["videoq", "worker"]
    assert "worker@%h" in container["command"]
    assert "videoq health" in " ".join(container["livenessProbe"]["exec"]["command"])
    assert container["readinessProbe"]["exec"]["command"] == ["videoq", "health"]
    refs = {next(iter(r.values()))["name"] for r in container["envFrom"]}
    assert refs == {"videoq-config", "videoq-secrets"}
    config = by_kind("ConfigMap")["videoq-config"]["data"]
    secret = by_kind("Secret")["videoq-secrets"]["stringData"]
    assert "AIMLAPI_KEY" in secret and "AIMLAPI_KEY" not in config
    assert config["VIDEOQ_REDIS_URL"].startswith("redis://videoq-redis:6379")
    for name in config:  # every key is a real setting
        field = name.removeprefix("VIDEOQ_").lower() if name.startswith("VIDEOQ_") else name.lower()
        assert field in Settings.model_fields, name


def test_redis_is_persistent_and_keda_scales_the_worker_on_the_queue() -> None:
    redis = by_kind("StatefulSet")["videoq-redis"]
    args = " ".join(containers(redis)[0]["args"])
    assert "--appendonly yes" in args
    assert redis["spec"]["volumeClaimTemplates"]
    scaled = by_kind("ScaledObject")["videoq-worker"]
    assert scaled["spec"]["scaleTargetRef"]["name"] in by_kind("Deployment")
    [trigger] = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    config = by_kind("ConfigMap")["videoq-config"]["data"]
    assert trigger["metadata"]["listName"] == config.get("VIDEOQ_QUEUE", DEFAULTS.queue)
    assert int(trigger["metadata"]["listLength"]) > 0


def test_flower_in_kubernetes_has_auth_and_state() -> None:
    flower = by_kind("Deployment")["videoq-flower"]
    [container] = containers(flower)
    assert container["command"][:2] == ["videoq", "flower"]
    assert "VIDEOQ_FLOWER_BASIC_AUTH" in by_kind("Secret")["videoq-secrets"]["stringData"]
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    db = by_kind("ConfigMap")["videoq-config"]["data"]["VIDEOQ_FLOWER_DB"]
    assert str(Path(db).parent) in mounts
