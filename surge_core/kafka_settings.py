"""Settings shared by everything that talks to Kafka (the pipelines and the gateway's inference log).

Credentials never appear here: SASL username/password are read from the environment variables named by
`sasl_username_env` / `sasl_password_env` (on Kubernetes, filled from a Secret through `secretKeyRef`).
"""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class KafkaSettings(BaseModel):
    """How to reach the brokers: any Apache Kafka (or Kafka-protocol broker), plaintext, TLS or SASL."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    bootstrap_servers: str = Field(
        "127.0.0.1:9092", min_length=1, description="Comma-separated host:port list of brokers."
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="Kafka security protocol."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism (with a SASL_* protocol)."
    )
    sasl_username_env: str = Field(
        "KAFKA_SASL_USERNAME", description="Environment variable holding the SASL username."
    )
    sasl_password_env: str = Field(
        "KAFKA_SASL_PASSWORD", description="Environment variable holding the SASL password."
    )
    ssl_cafile: str | None = Field(None, description="CA bundle for TLS (a mounted file path).")
    client_id: str = Field("surge", min_length=1, description="Client id sent to the brokers.")

    @model_validator(mode="after")
    def _sasl_needs_a_mechanism(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL") and self.sasl_mechanism is None:
            raise ValueError(f"security_protocol {self.security_protocol} needs sasl_mechanism")
        return self

    def kafka_python_config(self) -> dict[str, Any]:
        """Keyword arguments common to kafka-python's KafkaProducer / KafkaConsumer / KafkaAdminClient."""
        config: dict[str, Any] = {
            "bootstrap_servers": self.bootstrap_servers.split(","),
            "security_protocol": self.security_protocol,
            "client_id": self.client_id,
        }
        if self.sasl_mechanism:
            config["sasl_mechanism"] = self.sasl_mechanism
            config["sasl_plain_username"] = os.environ.get(self.sasl_username_env, "")
            config["sasl_plain_password"] = os.environ.get(self.sasl_password_env, "")
        if self.ssl_cafile:
            config["ssl_cafile"] = self.ssl_cafile
        return config
