"""API keys -> principals: a hashed keys file (reloaded without a restart) and the simple env form.

Two sources, both optional (at least one, unless `allow_unauthenticated`):

- `gateway.api_keys_file`: YAML, e.g. a mounted Kubernetes Secret. Only sha256 hashes of keys are stored:

      principals:
        - name: acme-search          # what logs and the inference log show
          tenant: acme
          scopes: [inference, documents:read]
          key_sha256: 9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08

  `python -m deployments.api_keys <key>` prints a key's hash. The file is re-read when its modification
  time, size or inode changes (checked at most every `api_keys_reload_s`; a Secret update swaps a symlink,
  which changes the inode). A file that fails to parse keeps the previous principals and logs why: a typo
  must not lock every client out.
- `gateway.api_keys_env` (SURGE_API_KEYS): comma-separated keys, each an `admin` of the default tenant,
  named `key-<first 8 hex of its sha256>`: the single-tenant form.

A presented key is hashed and looked up; the key itself is never stored, compared in plain text or logged.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import threading
import time
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from deployments.openai_api import ApiError
from deployments.principal import SCOPES, Principal, Scope
from deployments.settings import GatewaySettings
from surge_core.tenancy import DEFAULT_TENANT, TENANT_PATTERN

logger = logging.getLogger("ray.serve")


def key_hash(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


class PrincipalEntry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$", description="Principal name.")
    tenant: str = Field(DEFAULT_TENANT, pattern=TENANT_PATTERN, description="Tenant it acts for.")
    scopes: list[Scope] = Field(min_length=1, description=f"Any of {sorted(SCOPES)}.")
    key_sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="sha256 of the key, lowercase hex.")


class KeysFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    principals: list[PrincipalEntry] = Field(default_factory=list)


def load_keys_file(path: Path) -> dict[str, Principal]:
    """key hash -> principal; raises ValueError naming the problem."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        parsed = KeysFile.model_validate(raw)
    except (OSError, yaml.YAMLError, ValidationError) as error:
        raise ValueError(f"{path}: {error}") from error
    table: dict[str, Principal] = {}
    for entry in parsed.principals:
        if entry.key_sha256 in table:
            raise ValueError(f"{path}: principal {entry.name!r} reuses another principal's key")
        table[entry.key_sha256] = Principal(entry.name, entry.tenant, frozenset(entry.scopes))
    return table


def env_principals(raw: str) -> dict[str, Principal]:
    table: dict[str, Principal] = {}
    for key in (k.strip() for k in raw.split(",")):
        if key:
            digest = key_hash(key)
            table[digest] = Principal(f"key-{digest[:8]}", DEFAULT_TENANT, frozenset({"admin"}))
    return table


class ApiKeyAuth:
    """Bearer API key -> Principal. Refuses to construct without keys unless `allow_unauthenticated`."""

    def __init__(self, settings: GatewaySettings) -> None:
        self._env = env_principals(os.environ.get(settings.api_keys_env, ""))
        self._path = Path(settings.api_keys_file) if settings.api_keys_file else None
        self._reload_s = settings.api_keys_reload_s
        self._lock = threading.Lock()
        self._file: dict[str, Principal] = {}
        self._file_stamp: tuple[int, int, int] | None = None
        self._checked = 0.0
        if self._path is not None:
            self._file = load_keys_file(self._path)  # a broken file at start is an error, not a warning
            self._file_stamp = self._stamp()
        self.enabled = bool(self._env or self._path)
        if not self.enabled:
            if not settings.allow_unauthenticated:
                raise RuntimeError(
                    f"no API keys: set the environment variable {settings.api_keys_env} (comma-separated), "
                    "gateway.api_keys_file, or, for local development only, gateway.allow_unauthenticated: true"
                )
            logger.warning(
                "!!! gateway.allow_unauthenticated is set: the API accepts requests WITHOUT an API key. "
                "Never use this outside local development. !!!"
            )

    def _stamp(self) -> tuple[int, int, int] | None:
        assert self._path is not None
        try:
            st = self._path.stat()
        except OSError:
            return None
        return (st.st_mtime_ns, st.st_size, st.st_ino)

    def _maybe_reload(self) -> None:
        if self._path is None:
            return
        now = time.monotonic()
        if now - self._checked < self._reload_s:
            return
        with self._lock:
            self._checked = now
            stamp = self._stamp()
            if stamp is None or stamp == self._file_stamp:
                return
            try:
                table = load_keys_file(self._path)
            except ValueError as error:
                logger.error("API keys file not reloaded, keeping the previous principals: %s", error)
                self._file_stamp = stamp
                return
            self._file, self._file_stamp = table, stamp
            logger.info("API keys file reloaded: %d principals", len(table))

    def principal(self, authorization: str | None) -> Principal | None:
        """The principal of a valid `Bearer <key>`, else None (also None when auth is disabled)."""
        if not self.enabled:
            return Principal(name="anonymous")
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return None
        self._maybe_reload()
        digest = key_hash(token.strip())
        # A hash look-up: timing reveals at most how a sha256 of the presented key compares, not the key.
        return self._file.get(digest) or self._env.get(digest)

    def check(self, authorization: str | None) -> Principal:
        principal = self.principal(authorization)
        if principal is None:
            raise ApiError(
                401,
                "missing or invalid API key (send 'Authorization: Bearer <key>')",
                error_type="authentication_error",
            )
        return principal


if __name__ == "__main__":
    for key in sys.argv[1:]:
        print(key_hash(key))
