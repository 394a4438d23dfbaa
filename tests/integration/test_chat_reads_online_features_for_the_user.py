"""The loop from Kafka to serving: features the feature job wrote to the online store reach the model's
prompt when a chat request names the `user`, and come back in the response."""

from __future__ import annotations

from datetime import UTC, datetime

import openai
import pytest

from surge_core.feature_store import OffsetRange, PartitionRange, open_online_store
from tests.fixtures_serve import SurgeApp

pytestmark = pytest.mark.integration


def feature_row(entity_id: str) -> dict[str, object]:
    start = datetime(2026, 11, 29, 10, tzinfo=UTC)
    return {
        "entity_id": entity_id,
        "window_start": start,
        "window_end": datetime(2026, 11, 29, 11, tzinfo=UTC),
        "event_count": 3,
        "value_count": 2,
        "value_sum": 42.5,
        "value_max": 40.0,
        "event_type_counts": '{"purchase": 2, "view": 1}',
        "first_event_at": start,
        "last_event_at": datetime(2026, 11, 29, 10, 30, tzinfo=UTC),
        "text_count": 1,
        "text_embedding": [0.1] * 384,
    }


@pytest.fixture(scope="module")
def user_with_features(surge_app: SurgeApp) -> str:
    store = open_online_store(surge_app.settings.gateway.online_features)
    store.apply(OffsetRange.of("events", [PartitionRange(0, 0, 3)]), [feature_row("user-42")])
    store.close()
    return "user-42"


def test_chat_for_a_known_user_carries_their_features(surge_app: SurgeApp, user_with_features: str) -> None:
    client = openai.OpenAI(base_url=f"{surge_app.base_url}/v1", api_key=surge_app.api_key, timeout=300)
    response = client.chat.completions.create(
        model="tiny-llama",
        messages=[{"role": "user", "content": "What did I buy?"}],
        max_tokens=2,
        user=user_with_features,
    )
    features = response.model_extra["features"]
    assert features["event_count"] == 3
    assert features["value_sum"] == 42.5
    assert "text_embedding" not in features, "vectors stay out of the prompt"
    assert response.usage is not None and response.usage.prompt_tokens > 20


def test_chat_for_an_unknown_user_has_no_features(surge_app: SurgeApp, user_with_features: str) -> None:
    client = openai.OpenAI(base_url=f"{surge_app.base_url}/v1", api_key=surge_app.api_key, timeout=300)
    response = client.chat.completions.create(
        model="tiny-llama", messages=[{"role": "user", "content": "hi"}], max_tokens=2, user="nobody"
    )
    assert "features" not in (response.model_extra or {})
