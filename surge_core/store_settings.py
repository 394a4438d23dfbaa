"""Settings every layer shares: the strict base model and where the vector index lives.

Both the Retriever (serving) and the ingestion consumer's direct sink (pipelines) open a vector store from
these, so they live below both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from surge_core.model_assets import cache_dir


class StrictModel(BaseModel):
    """Base for every settings model: unknown keys are an error, instances are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class EmbeddedStoreSettings(StrictModel):
    """The embedded index: persists to a directory, needs no server."""

    backend: Literal["embedded"] = Field("embedded", description="Selects the embedded index.")
    path: Path = Field(
        default_factory=lambda: cache_dir() / "index",
        description="Directory where the index persists (default: $SURGE_CACHE_DIR/index; `make run` keeps "
        "it in the checkout's .cache/surge/index).",
    )


class PgVectorStoreSettings(StrictModel):
    """PostgreSQL + pgvector, reached by a connection string taken from an environment variable."""

    backend: Literal["pgvector"] = Field("pgvector", description="Selects PostgreSQL + pgvector.")
    dsn_env: str = Field(
        "SURGE_PG_DSN", min_length=1, description="Environment variable holding the connection string."
    )
    table: str = Field(
        "surge_chunks", pattern=r"^[a-z_][a-z0-9_]{0,62}$", description="Table that holds the chunks."
    )
    pool_size: int = Field(4, ge=1, le=64, description="Connections kept per replica.")
    index: Literal["hnsw", "exact"] = Field(
        "hnsw",
        description="'hnsw': approximate, fast on large tables, slower writes; 'exact': scans every row "
        "(exact results, fast writes; fine up to tens of thousands of chunks).",
    )
    ef_search: int = Field(
        100, ge=1, le=1000, description="HNSW candidates per search (at least top_k): recall vs. latency."
    )
    connect_timeout_s: float = Field(
        5.0, ge=1, le=300, description="Longest wait to open a connection (libpq connect_timeout)."
    )
    statement_timeout_s: float = Field(
        30.0, gt=0, le=3600, description="Longest a statement may run before the server cancels it."
    )


VectorStoreSettings = Annotated[EmbeddedStoreSettings | PgVectorStoreSettings, Field(discriminator="backend")]
