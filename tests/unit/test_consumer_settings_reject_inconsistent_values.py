"""Pipeline settings fail at load time with a message naming the field."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from pipelines.ingestion import DirectSinkSettings, HttpSinkSettings, IngestionSettings


def test_defaults_are_valid_and_pick_the_direct_sink() -> None:
    settings = IngestionSettings()
    assert settings.group_id == "surge-ingestion"
    assert isinstance(settings.sink, DirectSinkSettings)


def test_the_sink_is_chosen_by_kind() -> None:
    settings = IngestionSettings.model_validate({"sink": {"kind": "http", "url": "http://127.0.0.1:8000"}})
    assert isinstance(settings.sink, HttpSinkSettings)


def test_retries_that_outlast_the_poll_interval_are_rejected() -> None:
    with pytest.raises(ValidationError, match="max_poll_interval_s"):
        IngestionSettings(batch_size=1000, max_poll_interval_s=60, retry={"max_attempts": 10})


def test_chunk_overlap_must_be_below_chunk_size() -> None:
    with pytest.raises(ValidationError, match="chunk_overlap_chars"):
        DirectSinkSettings(chunk_chars=100, chunk_overlap_chars=100)


@pytest.mark.parametrize(
    "fields",
    [{"batch_size": 0}, {"topic_prefix": "bad prefix!"}, {"group_instance_id": ""}, {"metrics_port": 70000}],
)
def test_out_of_range_values_are_rejected(fields: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match=next(iter(fields))):
        IngestionSettings.model_validate(fields)


def test_unknown_keys_are_rejected() -> None:
    with pytest.raises(ValidationError, match="batchsize"):
        IngestionSettings.model_validate({"batchsize": 10})
