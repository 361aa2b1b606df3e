"""Configuration, read from ``CLAIMCHECK_*`` environment variables.

Every process (runtime, tool host, agent, CLI) reads the same settings, so one
environment describes one deployment. Defaults give the embedded single-machine
stack; pointing ``CLAIMCHECK_NATS_URL`` and ``CLAIMCHECK_LEDGER`` elsewhere
scales it out without code changes.

There is no default NATS server: a process talks to the one its settings name, or
to the one ``claimcheck up`` started for its state directory (``nats.url``, with the
server's name in ``nats.server`` so that a stale file is caught), never to whatever
happens to listen on the standard port.
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="CLAIMCHECK_", extra="ignore")

    state_dir: Path = Field(Path(".claimcheck"), description="Where local state lives.")
    nats_url: str = Field("", description="NATS server(s), comma separated; none by default.")
    nats_server_name: str = Field(
        "", description="The server name to expect (checked on connect); empty: any."
    )
    nats_port: int = Field(
        4280, ge=0, le=65535, description="Port of the embedded stack's server; 0: any free one."
    )
    prefix: str = Field("cc", pattern=r"^[A-Za-z0-9_-]+$", description="Subject prefix.")
    ledger: str = Field(
        "", description="Ledger URL: empty for <state_dir>/ledger.db, or postgresql://..."
    )
    policy: Path | None = Field(None, description="Permission policy TOML file.")
    smtp_host: str = "127.0.0.1"
    smtp_port: int = 8025
    tickets_db: Path | None = Field(None, description="SQLite file of the ticket tool.")
    tool_timeout: float = Field(10.0, gt=0, description="Seconds the runtime waits for a tool.")
    tool_availability_window: float = Field(
        60.0,
        gt=0,
        description="Seconds the runtime keeps asking when no tool host answers (restarts), "
        "with backoff and jitter, before the failure table counts a failure.",
    )
    sweep_interval: float = Field(
        10.0,
        gt=0,
        description="Seconds between the runtime's sweeps for workflows past their deadline "
        "or stalled (the policy's [deadlines]).",
    )
    tool_lease: float = Field(
        5.0,
        gt=0,
        description="Seconds a tool host's claim on an idempotency key lasts without renewal: "
        "how soon another host takes over the call of a host that died mid-effect.",
    )
    request_timeout: float = Field(
        30.0, gt=0, description="Seconds an agent waits for the runtime."
    )
    agent_concurrency: int = Field(
        8, ge=1, le=1000, description="Handoffs an agent process works on at once."
    )
    credentials: Path | None = Field(
        None, description="This process's NATS credentials (JSON: user, password)."
    )
    signing_key: Path | None = Field(
        None, description="The runtime's signing key (nkeys seed); <state>/credentials/runtime.nk."
    )
    runtime_public_key: str = Field(
        "",
        description="The runtime's public key (tool hosts, auditors); else <state>/runtime.pub.",
    )
    model: str = Field("claude-sonnet-4-5", description="The Anthropic model agents reason with.")
    model_max_tokens: int = Field(1024, gt=0)
    model_timeout: float = Field(60.0, gt=0, description="Seconds per model request.")
    model_availability_window: float = Field(
        60.0,
        gt=0,
        description="Seconds the runtime advises trying an overloaded, rate-limited or "
        "unreachable model again (failure kind model_unavailable) before failing the workflow.",
    )
    stream_replicas: int = Field(1, ge=1, le=5, description="JetStream replicas (3 in a cluster).")

    @model_validator(mode="after")
    def _nats_url_from_running_stack(self) -> Settings:
        """Find the NATS server that ``claimcheck up`` started for this state directory."""
        url_file, name_file = self.state_dir / "nats.url", self.state_dir / "nats.server"
        if "nats_url" not in self.model_fields_set and url_file.exists():
            self.nats_url = url_file.read_text().strip()
            if "nats_server_name" not in self.model_fields_set and name_file.exists():
                self.nats_server_name = name_file.read_text().strip()
        return self

    def ledger_url(self) -> str:
        return self.ledger or f"sqlite:///{(self.state_dir / 'ledger.db').resolve()}"

    def tickets_path(self) -> Path:
        return self.tickets_db or self.state_dir / "tickets.db"

    def as_environment(self) -> dict[str, str]:
        """The variables that give a child process these same settings."""
        values = self.model_dump(exclude_none=True)
        return {f"CLAIMCHECK_{key.upper()}": str(value) for key, value in values.items()}


def redacted(url: str) -> str:
    """``url`` fit for a message or a log: its password replaced by ``***``."""
    parts = urlsplit(url)
    if not parts.password:
        return url
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit(parts._replace(netloc=f"{parts.username or ''}:***@{host}"))
