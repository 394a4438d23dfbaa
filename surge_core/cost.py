"""What serving costs, and who it is charged to: a price table, the cost of a replica, the cost of a request.

Both sides use it: the gateway prices each request's stage seconds (metrics and the `usage` topic), and
`surge cost` sums usage records and prices the always-on alternative. Prices are list prices of a
public cloud's on-demand instances, rounded (late 2025): set yours in the serve config (`cost.prices`).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, model_validator

from surge_core.store_settings import StrictModel

UsdPerHour = Annotated[float, Field(ge=0, le=1000, allow_inf_nan=False)]
ACCELERATOR_PATTERN = r"^[a-z0-9][a-z0-9._-]{0,63}$"
STAGES = ("gateway", "embedder", "retriever", "llm")


class PriceTable(StrictModel):
    """Hourly prices of what a replica reserves: accelerators by type, CPUs, and memory."""

    accelerator_usd_per_hour: dict[Annotated[str, Field(pattern=ACCELERATOR_PATTERN)], UsdPerHour] = Field(
        default_factory=lambda: {
            "nvidia-t4": 0.35,
            "nvidia-l4": 0.70,
            "nvidia-a10g": 1.00,
            "nvidia-a100": 3.70,
            "nvidia-h100": 6.90,
        },
        description="USD per accelerator-hour by type (the GPU part of GPU instances' on-demand prices).",
    )
    cpu_usd_per_hour: UsdPerHour = Field(0.035, description="USD per vCPU-hour.")
    memory_usd_per_gib_hour: UsdPerHour = Field(0.0045, description="USD per GiB-hour of memory.")


class StageFootprint(StrictModel):
    """What one replica of a stage reserves, as priced (CPUs and GPUs come from the stage's settings)."""

    memory_gib: float = Field(1.0, ge=0, le=4096, description="GiB of memory one replica holds.")


class CostSettings(StrictModel):
    """Cost attribution: the price table, the accelerator the GPUs are, and each stage's memory."""

    prices: PriceTable = Field(default_factory=PriceTable, description="Hourly prices.")
    accelerator: str = Field(
        "nvidia-l4", pattern=ACCELERATOR_PATTERN, description="Accelerator type of the stages' GPUs."
    )
    stages: dict[str, StageFootprint] = Field(
        default_factory=lambda: {
            "gateway": StageFootprint(memory_gib=0.5),
            "embedder": StageFootprint(memory_gib=1.0),
            "retriever": StageFootprint(memory_gib=1.0),
            "llm": StageFootprint(memory_gib=4.0),
        },
        description="Memory per replica of each stage (gateway, embedder, retriever, llm).",
    )

    @model_validator(mode="after")
    def _known_names(self) -> CostSettings:
        unknown = set(self.stages) - set(STAGES)
        if unknown:
            raise ValueError(f"stages: unknown {sorted(unknown)}; known: {list(STAGES)}")
        if self.accelerator not in self.prices.accelerator_usd_per_hour:
            raise ValueError(
                f"accelerator {self.accelerator!r} has no price in prices.accelerator_usd_per_hour "
                f"({sorted(self.prices.accelerator_usd_per_hour)})"
            )
        return self

    def replica_cost(self, stage: str, num_cpus: float, num_gpus: float, slots: int = 1) -> ReplicaCost:
        memory = self.stages.get(stage, StageFootprint()).memory_gib
        return ReplicaCost.of(
            self.prices,
            self.accelerator,
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            memory_gib=memory,
            slots=slots,
        )


class ReplicaCost(BaseModel):
    """The price of one replica per hour, and of the share of it a request uses.

    usd_per_hour = num_cpus * cpu_usd_per_hour + num_gpus * accelerator_usd_per_hour[accelerator]
                   + memory_gib * memory_usd_per_gib_hour
    request_usd  = stage_seconds * usd_per_hour / 3600 / slots

    A replica serves `slots` requests at once (the stage's `max_ongoing_requests`; the LLM's equals its
    engine's `max_num_seqs`), so a request pays for one slot of it while it runs. Charging it the whole
    replica instead made the requests of a cost replay (`benchmarks/cost_replay.py`) pay 26x the replica
    bill: every overlapping request paid again for the same seconds. With slots, the charges of a replica's
    requests add up to at most its busy seconds; what a replica cost beyond them is capacity nobody used
    (idle warm seconds, empty slots), which `surge cost` prices separately as the bill's unallocated part.

    Worked example (default prices): the LLM on one L4 with 4 vCPUs and 16 GiB:
    4 * 0.035 + 1 * 0.70 + 16 * 0.0045 = 0.14 + 0.70 + 0.072 = 0.912 USD/h; with 16 slots, a request that
    runs in it for 2.5 s is charged 2.5 * 0.912 / 3600 / 16 = 0.0000396 USD, and 16 such requests side by
    side pay exactly the 2.5 replica-seconds (0.000633 USD).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    usd_per_hour: float = Field(ge=0, allow_inf_nan=False, description="USD per hour of one replica.")
    gpus: float = Field(0.0, ge=0, description="GPUs the replica reserves (GPU-seconds accrue with it).")
    slots: int = Field(1, ge=1, description="Requests one replica serves at once (max_ongoing_requests).")

    @classmethod
    def of(
        cls,
        prices: PriceTable,
        accelerator: str,
        *,
        num_cpus: float,
        num_gpus: float,
        memory_gib: float,
        slots: int = 1,
    ) -> ReplicaCost:
        gpu_price = prices.accelerator_usd_per_hour.get(accelerator, 0.0) if num_gpus else 0.0
        usd = (
            num_cpus * prices.cpu_usd_per_hour
            + num_gpus * gpu_price
            + memory_gib * prices.memory_usd_per_gib_hour
        )
        return cls(usd_per_hour=usd, gpus=num_gpus, slots=slots)

    def usd_for(self, seconds: float) -> float:
        """A request's charge for `seconds` in one slot of this replica."""
        return max(0.0, seconds) * self.usd_per_hour / 3600 / self.slots

    def always_on_usd(self, hours: float, replicas: int = 1) -> float:
        """What `replicas` replicas kept up for `hours` cost (the alternative to scaling to zero)."""
        return max(0.0, hours) * replicas * self.usd_per_hour
