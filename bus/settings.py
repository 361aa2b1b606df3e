"""Configuration, read from ``CLAIMCHECK_*`` environment variables.

Every process (runtime, tool host, agent, CLI) reads the same settings, so one
environment describes one deployment. Defaults give the embedded single-machine
stack; pointing ``CLAIMCHECK_NATS_URL`` and ``CLAIMCHECK_LEDGER`` elsewhere
scales it out without code changes.

A project file, ``claimcheck.toml`` in the current directory, gives defaults: its
top-level keys are settings (``policy = "policy.toml"``, ``ledger = "postgresql://..."``),
and an environment variable overrides each of them.

There is no default NATS server: a process talks to the one its settings name, or
to the one ``claimcheck up`` started for its state directory (``nats.url``, with the
server's name in ``nats.server`` so that a stale file is caught), never to whatever
happens to listen on the standard port.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import Field, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

PROJECT_FILE = "claimcheck.toml"


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="CLAIMCHECK_", extra="ignore", toml_file=PROJECT_FILE
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        """Arguments, then the environment, then the project file, then the defaults."""
        project = TomlConfigSettingsSource(settings_cls)
        return init_settings, env_settings, dotenv_settings, file_secret_settings, project

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
    maildir: Path | None = Field(
        None,
        description="The Maildir the mail server delivers to, readable by the email tool "
        "(verify --external looks for sent messages there); <state_dir>/maildir by default, "
        "where the local SMTP server of `up --local-smtp` and the demo delivers.",
    )
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
    inbox_ack_wait: float = Field(
        10.0,
        gt=0,
        description="Seconds an agent's inbox waits for the acknowledgement of a handoff before "
        "delivering it again (a working agent beats three times per wait).",
    )
    inbox_max_deliver: int = Field(
        5, ge=1, description="Deliveries of one handoff before it is dead-lettered."
    )
    request_timeout: float = Field(
        30.0, gt=0, description="Seconds an agent waits for the runtime."
    )
    agent_concurrency: int = Field(
        8, ge=1, le=1000, description="Handoffs an agent process works on at once."
    )
    credentials: Path | None = Field(
        None,
        description="This process's NATS credentials: a .creds file (auth init), or JSON.",
    )
    nats_ca: Path | None = Field(
        None, description="CA certificate(s) the NATS servers' TLS certificates must chain to."
    )
    signing_key: Path | None = Field(
        None, description="The runtime's signing key (nkeys seed); <state>/credentials/runtime.nk."
    )
    runtime_public_key: str = Field(
        "",
        description="The runtime's public key (tool hosts, auditors); else <state>/runtime.pub.",
    )
    model: str = Field("claude-sonnet-5-5", description="The Anthropic model agents reason with.")
    model_max_tokens: int = Field(1024, gt=0, description="Output tokens a model call may use.")
    model_max_tokens_ceiling: int = Field(
        8192,
        gt=0,
        description="The most output tokens a call cut off at max_tokens is given on a retry.",
    )
    model_temperature: float | None = Field(
        None, ge=0, le=1, description="Sampling temperature; none: the provider's default."
    )
    model_effort: Literal["", "low", "medium", "high", "xhigh", "max"] = Field(
        "", description="How much effort the model spends (output_config.effort); none: default."
    )
    model_timeout: float = Field(60.0, gt=0, description="Seconds per model request.")
    models: Path | None = Field(
        None,
        description="A TOML file of per-agent model settings ([default], [agents.<name>]) "
        "over the CLAIMCHECK_MODEL* ones.",
    )
    prices: Path | None = Field(
        None, description="The model price table (TOML); none: the one shipped in the package."
    )
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

    def maildir_path(self) -> Path:
        return self.maildir or self.state_dir / "maildir"

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
