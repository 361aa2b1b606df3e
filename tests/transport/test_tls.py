"""Optional TLS: a real nats-server with a certificate from the deployment's own CA and
``auth init``'s identities. A client given that CA (``CLAIMCHECK_NATS_CA``) connects; one
that trusts only the system's CAs, or another CA, is refused before it authenticates."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from bus.settings import Settings
from bus.transport import connection
from bus.transport.connection import NoDeployment, connect
from bus.transport.identities import AUTH_CONFIG, Identities
from bus.transport.server import EmbeddedNats
from bus.transport.subjects import Subjects

pytestmark = pytest.mark.timeout(60)


def openssl(*args: str, cwd: Path) -> None:
    binary = shutil.which("openssl")
    assert binary, "the TLS test needs the openssl command"
    subprocess.run([binary, *args], cwd=cwd, check=True, capture_output=True, timeout=30)


def certificate_authority(where: Path, name: str) -> Path:
    """A CA and a certificate it signed for 127.0.0.1 (``server.pem``, ``server.key``)."""
    where.mkdir(parents=True)
    key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    openssl("req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.pem", "-days", "1",
            "-subj", f"/CN={name}", cwd=where)  # fmt: skip
    openssl("req", *key, "-keyout", "server.key", "-out", "server.csr",
            "-subj", "/CN=localhost", cwd=where)  # fmt: skip
    (where / "san.ext").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", "server.pem", "-days", "1", "-extfile", "san.ext",
            cwd=where)  # fmt: skip
    return where


async def test_tls_with_the_deployments_ca(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(connection, "IMPATIENT_CONNECT_SECONDS", 2.0)
    ca = certificate_authority(tmp_path / "ca", "claimcheck-test-ca")
    other = certificate_authority(tmp_path / "other", "someone-else")
    creds = Identities(tmp_path / "auth", Subjects()).issue(["runtime"])["runtime"]
    tls = f'tls {{\n  cert_file: "{ca / "server.pem"}"\n  key_file: "{ca / "server.key"}"\n}}\n'
    auth = (tmp_path / "auth" / AUTH_CONFIG).read_text()
    server = EmbeddedNats(tmp_path / "nats", authorization=auth + tls)
    await server.start()
    try:
        settings = Settings(nats_url=server.url, credentials=creds, nats_ca=ca / "ca.pem")
        nc = await connect(settings, "tls-client", patient=False)
        assert nc.is_connected and nc._server_info.get("tls_required")
        await nc.jetstream().account_info()
        await nc.close()
        for trusted in (None, other / "ca.pem"):
            stranger = settings.model_copy(update={"nats_ca": trusted})
            with pytest.raises(NoDeployment, match="CLAIMCHECK_NATS_CA"):
                await connect(stranger, "untrusting", patient=False)
    finally:
        await server.stop()
