"""Vector indexes behind one interface (`VectorStore`); `open_vector_store(settings, dimensions)` picks one.

Importing this package registers the built-in backends: `embedded` (SQLite + FAISS in a directory) and
`pgvector` (PostgreSQL + pgvector).
"""

from surge_core.vector_store import embedded as _embedded  # noqa: F401  (registers "embedded")
from surge_core.vector_store import pgvector as _pgvector  # noqa: F401  (registers "pgvector")
from surge_core.vector_store.base import (
    ChunkRecord,
    SearchHit,
    VectorStore,
    Where,
    WriteResult,
    open_vector_store,
    register_backend,
)

__all__ = [
    "ChunkRecord",
    "SearchHit",
    "VectorStore",
    "Where",
    "WriteResult",
    "open_vector_store",
    "register_backend",
]
