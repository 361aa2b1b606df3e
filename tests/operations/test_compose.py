"""compose.yaml is a deployment a team could run: checked without a container engine.

The file is parsed and its properties checked (a NATS cluster that fsyncs, volumes,
healthchecks the start-up order waits on, each role with only its own credentials, the
ledger on a network only the runtimes reach, one image), and every nats-server
configuration it mounts passes ``nats-server -t`` with the identities that ``claimcheck
auth init`` writes.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from bus.transport.server import nats_server_binary
from tests.conftest import claimcheck

ROOT = Path(__file__).resolve().parents[2]
AGENTS = {"triage": "agent-triage", "notifier": "agent-notifier"}
ROLES = {"runtime": "runtime", "tools": "tools", "auditor": "auditor", "cli": "cli", **AGENTS}
"""Service -> the NATS role whose credentials it runs with."""
NATS_NODES = ["nats-1", "nats-2", "nats-3"]
PASSWORD_IN_URL = re.compile(r"://[^/@:]+:[^/@]+@")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


def test_three_nats_nodes_form_a_cluster_that_fsyncs_to_volumes(
    services: dict[str, Any],
) -> None:
    config = (ROOT / "deploy" / "nats" / "nats.conf").read_text()
    assert "sync_interval: always" in config and "store_dir: /data" in config
    for node in NATS_NODES:
        service = services[node]
        assert f"{node}:/data" in service["volumes"]
        listen = service["environment"]["NATS_CLUSTER_LISTEN"]
        assert f"nats-route://{listen}" in config  # every node is a route of the others
        address = listen.split(":")[0]
        assert service["networks"]["nats-cluster"]["ipv4_address"] == address
        assert "healthz" in " ".join(service["healthcheck"]["test"])


def test_postgres_keeps_its_data_and_no_password_is_in_the_file(
    services: dict[str, Any],
) -> None:
    postgres = services["postgres"]
    assert any(volume.endswith(":/var/lib/postgresql/data") for volume in postgres["volumes"])
    assert "pg_isready" in postgres["healthcheck"]["test"]
    assert "POSTGRES_PASSWORD" not in postgres["environment"]
    assert postgres["environment"]["POSTGRES_PASSWORD_FILE"] == "/run/secrets/ledger_password"
    for name, service in services.items():
        for key, value in (service.get("environment") or {}).items():
            assert "password" not in key.lower() or key.endswith("_FILE"), (name, key)
            assert not PASSWORD_IN_URL.search(str(value)), (name, key)


def test_start_up_waits_on_health_and_on_the_init_job(services: dict[str, Any]) -> None:
    init = services["init"]
    assert init["command"] == "init" and init["restart"] == "no"
    for dependency in [*NATS_NODES, "postgres"]:
        assert init["depends_on"][dependency] == {"condition": "service_healthy"}
    for name in ROLES:
        if name == "cli":
            continue
        assert services[name]["depends_on"] == {
            "init": {"condition": "service_completed_successfully"}
        }, name


def test_two_replicas_of_every_role(services: dict[str, Any]) -> None:
    for name in ("runtime", "tools", *AGENTS):
        assert services[name]["deploy"]["replicas"] == 2, name


def test_each_service_holds_only_its_own_credentials(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    for name, role in ROLES.items():
        service = services[name]
        own = f"{name}_creds"
        creds = [secret for secret in service["secrets"] if secret.endswith("_creds")]
        assert creds == [own], name
        assert service["environment"]["CLAIMCHECK_CREDENTIALS"] == f"/run/secrets/{own}"
        assert compose["secrets"][own]["file"] == f"./deploy/auth/{role}.creds"
    holders = {
        name for name, s in services.items() if "runtime_signing_key" in s.get("secrets", [])
    }
    assert holders == {"runtime", "init"}  # the private key: the runtime alone (init acts as it)
    for name in ("tools", "auditor"):
        [public] = services[name]["configs"]
        assert public == {
            "source": "runtime_public_key",
            "target": "/var/lib/claimcheck/runtime.pub",
        }


def test_only_the_runtime_reaches_the_ledger(
    compose: dict[str, Any], services: dict[str, Any]
) -> None:
    on_ledger = {name for name, s in services.items() if "ledger" in s.get("networks", [])}
    assert on_ledger == {"postgres", "runtime", "init"}
    assert compose["networks"]["ledger"]["internal"] is True
    assert compose["networks"]["bus"]["internal"] is True
    assert not any("ports" in service for service in services.values())  # nothing published
    cluster = {name for name, s in services.items() if "nats-cluster" in s.get("networks", [])}
    assert cluster == set(NATS_NODES)  # no client can reach a route port


def test_one_image_built_once_and_nothing_installed_at_start(services: dict[str, Any]) -> None:
    ours = {name: s for name, s in services.items() if name in ROLES or name in ("init", "mail")}
    assert {s["image"] for s in ours.values()} == {"claimcheck:latest"}
    assert all(s["build"] == "." for s in ours.values())  # one context: one image (cached)
    for service in services.values():
        assert "pip" not in str(service.get("command", "")) + str(service.get("entrypoint", ""))
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "\nUSER 10001\n" in dockerfile  # no role runs as root
    assert "deploy/auth/" in (ROOT / ".dockerignore").read_text()  # no secret in the image


@pytest.fixture(scope="module")
def identities(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What ``claimcheck auth init`` writes for compose.yaml's agents."""
    where = tmp_path_factory.mktemp("deploy") / "auth"
    flags = [flag for agent in AGENTS for flag in ("--agent", agent)]
    done = claimcheck("auth", "init", "--dir", str(where), *flags)
    assert done.returncode == 0, done.stdout + done.stderr
    return where


def mounted(source: str, identities: Path) -> Path:
    """A file compose.yaml names, with deploy/auth/ where ``auth init`` wrote it."""
    if source.startswith("./deploy/auth/"):
        return identities / source.removeprefix("./deploy/auth/")
    return ROOT / source


def test_every_secret_and_config_is_one_auth_init_writes(
    compose: dict[str, Any], identities: Path
) -> None:
    for entry in [*compose["secrets"].values(), *compose["configs"].values()]:
        assert mounted(entry["file"], identities).is_file(), entry["file"]


@pytest.mark.parametrize("node", NATS_NODES)
def test_each_nats_node_configuration_passes_the_servers_check(
    compose: dict[str, Any], identities: Path, tmp_path: Path, node: str
) -> None:
    """The files mounted where the node's container sees them, checked by nats-server -t."""
    service = compose["services"][node]
    for mount in service["configs"]:
        target = tmp_path / mount["target"].lstrip("/")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(mounted(compose["configs"][mount["source"]]["file"], identities), target)
    config = tmp_path / service["command"][-1].lstrip("/")
    checked = subprocess.run(
        [nats_server_binary(), "-t", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
        env={"PATH": "/usr/bin:/bin", **service["environment"]},
    )
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "operator:" in (config.parent / "nats-auth.conf").read_text()  # no anonymous access
