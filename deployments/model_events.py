"""The gateway's side of the `model-events` topic: one record per model-lifecycle change, with who and why.

Changes are rare (a deploy, a weight change, a rollback), so a small queue and one sender thread are
enough; like the inference log, publishing never blocks a request and never raises: a broker outage costs
a warning and, beyond `MAX_QUEUED` unsent events, the oldest event. It uses the inference log's broker
settings and topic prefix (the same cluster carries both). `recent` keeps the last events in memory, so an
operator (and a test) can see what the gateway did even without a broker.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from typing import Any

from surge_core.inference_log import InferenceLogSettings
from surge_core.kafka_admin import ensure_topics
from surge_core.records import ModelEventRecord
from surge_core.topics import MODEL_EVENTS

logger = logging.getLogger("ray.serve")
MAX_QUEUED = 1000
SEND_TIMEOUT_S = 10.0


class ModelEventLog:
    def __init__(self, settings: InferenceLogSettings, source: str) -> None:
        self.settings = settings
        self.source = source
        self.topic = MODEL_EVENTS.with_prefix(settings.topic_prefix)
        self.recent: deque[ModelEventRecord] = deque(maxlen=100)
        self._queue: deque[ModelEventRecord] = deque(maxlen=MAX_QUEUED)
        self._ready = threading.Condition()
        self._thread: threading.Thread | None = None

    def publish(self, event: str, *, actor: str, reason: str, **fields: Any) -> ModelEventRecord:
        record = ModelEventRecord.model_validate(
            {"event": event, "actor": actor, "reason": reason, "source": self.source, **fields}
        )
        self.recent.append(record)
        logger.info("model event %s: %s (by %s)", event, reason, actor)
        if not self.settings.enabled:
            return record
        with self._ready:
            self._queue.append(record)
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="surge-model-events", daemon=True)
                self._thread.start()
            self._ready.notify()
        return record

    def _run(self) -> None:
        from kafka import KafkaProducer

        producer: KafkaProducer | None = None
        while True:
            with self._ready:
                while not self._queue:
                    self._ready.wait()
                record = self._queue[0]
            try:
                if producer is None:
                    ensure_topics(self.settings.kafka, [self.topic], timeout_s=5)
                    producer = KafkaProducer(**self.settings.kafka.kafka_python_config(), acks="all")
                key = (record.alias or record.version or "").encode()
                future = producer.send(self.topic.name, key=key, value=record.model_dump_json().encode())
                future.get(timeout=SEND_TIMEOUT_S)
            except Exception as error:  # the broker is down: keep the event, retry in a while
                logger.warning("model-events: could not publish (%s); will retry", error)
                threading.Event().wait(2.0)
                continue
            with self._ready:
                if self._queue and self._queue[0] is record:
                    self._queue.popleft()
