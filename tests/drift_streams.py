"""Synthetic inference-log streams for the drift monitor's tests (seeded, so every run is the same).

Latency is log-normal, time to first token a fraction of it, token counts Poisson, retrieval scores
uniform, prompt-embedding sketches a shared direction plus noise (like real sentence embeddings, whose
mean is far from zero). `latency_shift` multiplies latencies by exp(shift); `topic_shift` tilts the
embeddings' direction toward another axis.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np

from surge_core.records import InferenceLogRecord

DIMS = 32
T0 = datetime(2026, 11, 1, tzinfo=UTC)


def inference_logs(
    rng: np.random.Generator,
    n: int,
    *,
    model: str = "smollm2-135m-instruct",
    latency_shift: float = 0.0,
    topic_shift: float = 0.0,
    start: datetime = T0,
    spacing_s: float = 1.0,
) -> list[InferenceLogRecord]:
    center = np.ones(DIMS) / np.sqrt(DIMS)
    other = np.zeros(DIMS)
    other[0] = 1.0
    direction = center * (1 - topic_shift) + other * topic_shift
    latency = rng.lognormal(np.log(0.4) + latency_shift, 0.3, n)
    ttft = latency * rng.uniform(0.1, 0.3, n)
    prompt_tokens = rng.poisson(120, n)
    completion_tokens = rng.poisson(60, n)
    scores = rng.uniform(0.3, 0.9, (n, 4))
    embeddings = direction + rng.normal(0, 0.15, (n, DIMS))
    return [
        InferenceLogRecord(
            request_id=f"r{i}",
            timestamp=start + timedelta(seconds=i * spacing_s),
            route="/v1/chat/completions",
            model=model,
            status_code=200,
            latency_s=float(latency[i]),
            ttft_s=float(ttft[i]),
            prompt_tokens=int(prompt_tokens[i]),
            completion_tokens=int(completion_tokens[i]),
            retrieval_scores=[float(x) for x in scores[i]],
            prompt_embedding=[float(x) for x in embeddings[i]],
        )
        for i in range(n)
    ]
