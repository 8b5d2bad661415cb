"""Process configuration from the environment (12-factor; Kubernetes sets these from
ConfigMaps, and secret values only through references)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass

from services.core.bus.base import Bus
from services.core.secrets import resolve_secret


class ConfigError(ValueError):
    pass


@dataclass(frozen=True)
class BusConfig:
    backend: str = "embedded"  # embedded | kafka
    embedded_path: str = "exsf-bus.sqlite"
    bootstrap_servers: str = ""
    security_protocol: str = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password_ref: str | None = None
    ssl_cafile: str | None = None
    ssl_certfile: str | None = None
    ssl_keyfile: str | None = None
    partitions: int = 12
    replication_factor: int = 1
    topic_prefix: str = ""

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> BusConfig:
        e = os.environ if env is None else env
        bootstrap = e.get("KAFKA_BOOTSTRAP_SERVERS", "")
        backend = e.get("EXSF_BUS", "kafka" if bootstrap else "embedded")
        if backend not in ("kafka", "embedded"):
            raise ConfigError(f"EXSF_BUS must be 'kafka' or 'embedded', got {backend!r}")
        if backend == "kafka" and not bootstrap:
            raise ConfigError("EXSF_BUS=kafka needs KAFKA_BOOTSTRAP_SERVERS (host:port[,host:port])")
        try:
            partitions = int(e.get("EXSF_PARTITIONS", "12"))
            rf = int(e.get("EXSF_REPLICATION_FACTOR", "1"))
        except ValueError as exc:
            raise ConfigError(f"EXSF_PARTITIONS / EXSF_REPLICATION_FACTOR must be integers ({exc})") from None
        if partitions < 1:
            raise ConfigError("EXSF_PARTITIONS must be >= 1")
        return cls(
            backend=backend,
            embedded_path=e.get("EXSF_EMBEDDED_PATH", "exsf-bus.sqlite"),
            bootstrap_servers=bootstrap,
            security_protocol=e.get("EXSF_KAFKA_SECURITY_PROTOCOL", "PLAINTEXT"),
            sasl_mechanism=e.get("EXSF_KAFKA_SASL_MECHANISM") or None,
            sasl_username=e.get("EXSF_KAFKA_SASL_USERNAME") or None,
            sasl_password_ref=e.get("EXSF_KAFKA_SASL_PASSWORD_REF") or None,
            ssl_cafile=e.get("EXSF_KAFKA_SSL_CAFILE") or None,
            ssl_certfile=e.get("EXSF_KAFKA_SSL_CERTFILE") or None,
            ssl_keyfile=e.get("EXSF_KAFKA_SSL_KEYFILE") or None,
            partitions=partitions,
            replication_factor=rf,
            topic_prefix=e.get("EXSF_TOPIC_PREFIX", ""),
        )


def open_bus(cfg: BusConfig) -> Bus:
    """Build (not start) the configured bus backend."""
    if cfg.backend == "embedded":
        from services.core.bus.embedded import EmbeddedBus

        return EmbeddedBus(cfg.embedded_path)
    from services.core.bus.kafka import KafkaBus, KafkaSettings

    password = resolve_secret(cfg.sasl_password_ref).reveal() if cfg.sasl_password_ref else None
    return KafkaBus(
        KafkaSettings(
            bootstrap_servers=cfg.bootstrap_servers,
            security_protocol=cfg.security_protocol,
            sasl_mechanism=cfg.sasl_mechanism,
            sasl_username=cfg.sasl_username,
            sasl_password=password,
            ssl_cafile=cfg.ssl_cafile,
            ssl_certfile=cfg.ssl_certfile,
            ssl_keyfile=cfg.ssl_keyfile,
            replication_factor=cfg.replication_factor,
        )
    )
