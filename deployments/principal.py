"""Who is calling: the principal an API key maps to (name, tenant, scopes), and what a request carries.

A principal is never its key: logs and inference-log records name `principal.name`. Scopes:

| scope             | allows                                                          |
| ----------------- | --------------------------------------------------------------- |
| `inference`       | /v1/chat/completions and /v1/completions                        |
| `embeddings`      | /v1/embeddings                                                  |
| `documents:read`  | RAG (retrieval reads the tenant's documents and returns sources) |
| `documents:write` | /v1/documents (upsert and delete)                               |
| `admin`           | every scope                                                     |

Every principal may list models and read /readyz's per-stage detail.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from deployments.openai_api import ApiError
from surge_core.tenancy import DEFAULT_TENANT

Scope = Literal["inference", "embeddings", "documents:read", "documents:write", "admin"]
SCOPES: frozenset[str] = frozenset({"inference", "embeddings", "documents:read", "documents:write", "admin"})


@dataclass(frozen=True)
class Principal:
    name: str
    tenant: str = DEFAULT_TENANT
    scopes: frozenset[str] = frozenset({"admin"})

    def allows(self, scope: str) -> bool:
        return "admin" in self.scopes or scope in self.scopes

    def require(self, scope: str, param: str | None = None) -> None:
        """403 naming the missing scope (the key is valid, it may just not do this)."""
        if not self.allows(scope):
            raise ApiError(
                403,
                f"the API key of principal {self.name!r} lacks the scope {scope!r}",
                param=param,
                error_type="permission_error",
            )


def _no_charge(tokens: int) -> None:
    return None


@dataclass(frozen=True)
class Caller:
    """What a flow knows about the request's caller: the principal, and where its token use is charged
    (the tokens-per-minute bucket, which is only known once a generation ends)."""

    principal: Principal
    spend_tokens: Callable[[int], None] = field(default=_no_charge)


ANONYMOUS = Caller(Principal(name="anonymous"))
