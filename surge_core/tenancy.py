"""Tenants: who owns a document, and how a document id is stored so tenants can never collide.

Every principal (an API key's owner) belongs to one tenant. A document belongs to the tenant that wrote
it; the server decides that tenant from the caller's key, never from the request. Storage keeps one
namespace per tenant by prefixing the document id: `acme` + `notes/a.md` -> `acme#notes/a.md`. `#` is not
allowed in a client's doc_id (`records.DOC_ID_PATTERN`), so a client can neither name another tenant's
stored id nor forge a prefix. The default tenant keeps bare ids, so indexes and Kafka topics written
before tenants existed are the default tenant's, unchanged.

Worked example: tenant `acme` deletes `x` -> the store deletes `acme#x`; tenant `globex`'s `globex#x` and
the default tenant's `x` are untouched.
"""

from __future__ import annotations

DEFAULT_TENANT = "default"
TENANT_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,62}$"
SEPARATOR = "#"


def stored_doc_id(tenant: str, doc_id: str) -> str:
    """The id a tenant's document has in the store and as its Kafka key."""
    if SEPARATOR in doc_id or SEPARATOR in tenant:
        raise ValueError(f"{SEPARATOR!r} is reserved: doc_id {doc_id!r}, tenant {tenant!r}")
    return doc_id if tenant == DEFAULT_TENANT else f"{tenant}{SEPARATOR}{doc_id}"


def split_stored_id(stored: str) -> tuple[str, str]:
    """(tenant, doc_id) of a stored id: `acme#x` -> ("acme", "x"); `x` -> ("default", "x")."""
    tenant, separator, doc_id = stored.partition(SEPARATOR)
    return (tenant, doc_id) if separator else (DEFAULT_TENANT, stored)


def stored_prefix(tenant: str) -> str | None:
    """What every stored id of `tenant` starts with; None for the default tenant (ids without `#`)."""
    return None if tenant == DEFAULT_TENANT else f"{tenant}{SEPARATOR}"
