"""The event-driven warmer: a backlog on a Kafka topic wakes a stage before its consumer's first call.

On a cluster the ingestion consumer scales from zero on its lag (KEDA), and only its first call to the app
would wake the Embedder: the two cold starts ran one after the other. This warmer holds `replicas` as soon
as the consumer group lags `min_lag` records or more, so the Embedder starts while the consumer does.

floor(t) = replicas if lag(t) >= min_lag else 0, where lag(t) is the group's lag (`surge_core.kafka_admin.
group_lag`) read at most every `poll_s` (the policy runs in Serve's controller every control-loop tick; the
broker is asked far less often). Worked example: min_lag 1, poll 5 s: 30 documents produced at 10:00:02 ->
the 10:00:05 read sees lag 30 -> floor 1 (the Embedder starts); once the consumer commits them, the next
read sees 0 and the floor drops (the load policy and Serve's delays decide when the replica goes).

A broker that cannot be reached costs the warmer, never the autoscaler: the floor is 0 and the error is
logged once per `poll_s`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from surge_core.kafka_admin import group_lag
from surge_core.kafka_settings import KafkaSettings

logger = logging.getLogger("ray.serve")

LagReader = Callable[[], int]


class BacklogWarmer:
    """Holds `replicas` while a consumer group lags `min_lag` or more records (read every `poll_s`).

    Not a frozen value like the other warmers: it caches the last lag it read (a read is a broker round
    trip). `read_lag` and `clock` are injectable for tests; by default the group's real lag is read."""

    def __init__(
        self,
        *,
        kafka: Mapping[str, Any],
        topic: str,
        group_id: str,
        min_lag: int = 1,
        replicas: int = 1,
        poll_s: float = 5.0,
        read_lag: LagReader | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if min_lag < 1 or replicas < 1 or poll_s <= 0:
            raise ValueError("backlog warmer: min_lag and replicas must be >= 1 and poll_s > 0")
        settings = KafkaSettings.model_validate(dict(kafka))
        self.topic, self.group_id = topic, group_id
        self.min_lag, self.replicas, self.poll_s = min_lag, replicas, poll_s
        self._read = read_lag or (lambda: group_lag(settings, group_id, topic))
        self._clock = clock
        self._read_at: float | None = None
        self.lag = 0

    def with_min_lead(self, lead_s: float) -> BacklogWarmer:
        return self  # event-driven: it wakes on the backlog itself, there is no expected time to lead

    def floor(self, now: float, model: Any = None) -> int:
        at = self._clock()
        if self._read_at is None or at - self._read_at >= self.poll_s:
            self._read_at = at
            try:
                self.lag = int(self._read())
            except Exception as error:  # the broker's trouble must not stop the autoscaler
                logger.warning("surge: backlog warmer could not read %s lag: %s", self.topic, error)
                self.lag = 0
        return self.replicas if self.lag >= self.min_lag else 0
