"""The learned warmer's keep-alive ends with the learned active hours, and every warmer's lead grows to the
cold start the policy measured (issue 16)."""

from __future__ import annotations

import datetime as dt
import json
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from deployments.autoscaling.cold_start import ColdStartLead, ColdStarts
from deployments.autoscaling.serve_policy import SurgeAutoscalingPolicy
from deployments.autoscaling.warmers import ArrivalModel, LearnedWarmer
from deployments.settings import AppSettings, AutoscalingSettings

WEEK = 7 * 86_400.0


def at(week: int, day: int, hh: int, mm: int, ss: int = 0) -> float:
    """Epoch seconds in week `week` after Monday 2026-11-30 (UTC)."""
    monday = dt.datetime(2026, 11, 30, tzinfo=dt.UTC)
    return (monday + dt.timedelta(weeks=week, days=day, hours=hh, minutes=mm, seconds=ss)).timestamp()


def busy(warmer: LearnedWarmer, model: ArrivalModel, start: float, end: float) -> ArrivalModel:
    model = warmer.observe(model, start, busy=True, warm=warmer.floor(start, model) > 0)
    return warmer.observe(model, end, busy=False, warm=True)


def office_weeks(warmer: LearnedWarmer, weeks: int) -> ArrivalModel:
    """Mon-Fri, a 1-minute busy period every 10 minutes from 09:00 (the last 16:50-16:51)."""
    model = ArrivalModel()
    for week in range(weeks):
        for day in range(5):
            for k in range(48):
                start = at(week, day, 9, 0) + k * 600
                model = busy(warmer, model, start, start + 60)
    return model


OFFICE = LearnedWarmer(lead_s=60, slot_min_periods=2)


def test_a_warmer_trained_on_weekday_office_hours_releases_minutes_after_five_not_hours() -> None:
    model = office_weeks(OFFICE, 2)
    model = busy(OFFICE, model, at(2, 0, 16, 50), at(2, 0, 16, 51))
    # The plain keep-alive (p99 of all idle times, nights included) is the 4 h cap: what held it to 20:51.
    assert OFFICE.windows(model)[1] == OFFICE.max_keep_alive_s
    # Outside the known hours: the pauses of the working day, 9 min x 1.1 = 594 s after the last request.
    assert OFFICE.off_hours_keep_alive(model) == pytest.approx(594)
    assert OFFICE.floor(at(2, 0, 16, 59), model) == 1  # inside the known 16:00 slot
    assert OFFICE.floor(at(2, 0, 17, 0), model) == 1  # 9 min after the last request
    assert OFFICE.floor(at(2, 0, 17, 2), model) == 0  # released 11 min after it
    assert OFFICE.floor(at(2, 0, 19, 0), model) == 0


def test_a_warmer_trained_on_weekday_office_hours_still_prewarms_before_nine() -> None:
    model = office_weeks(OFFICE, 2)
    model = busy(OFFICE, model, at(2, 0, 16, 50), at(2, 0, 16, 51))
    assert OFFICE.floor(at(2, 1, 7, 0), model) == 0
    assert OFFICE.floor(at(2, 1, 8, 59, 30), model) == 1  # within the 60 s lead of the known 09:00 slot
    assert OFFICE.floor(at(2, 1, 12, 0), model) == 1


def test_a_stray_request_at_night_does_not_hold_a_replica_all_night() -> None:
    model = office_weeks(OFFICE, 2)
    model = busy(OFFICE, model, at(2, 1, 3, 0), at(2, 1, 3, 1))
    assert OFFICE.floor(at(2, 1, 3, 15), model) == 0
    assert OFFICE.floor(at(2, 1, 5, 0), model) == 0  # the plain 4 h keep-alive held it until 07:01
    assert OFFICE.floor(at(2, 1, 8, 59, 30), model) == 1


def test_the_nights_between_active_hours_are_not_counted_as_pauses_inside_them() -> None:
    model = office_weeks(OFFICE, 2)
    assert model.in_hours_idle_times_s and max(model.in_hours_idle_times_s) == pytest.approx(540)
    assert max(model.idle_times_s) > 12 * 3600  # the nights and the weekend are in the plain histogram


def test_the_off_hours_keep_alive_never_falls_below_its_floor() -> None:
    warmer = LearnedWarmer(lead_s=60, slot_min_periods=2, off_hours_keep_alive_floor_s=1800)
    model = office_weeks(warmer, 2)
    assert warmer.off_hours_keep_alive(model) == 1800


def test_before_a_slot_is_known_the_keep_alive_is_the_plain_one() -> None:
    model = office_weeks(OFFICE, 1)  # one week: no slot seen in slot_min_periods = 2 periods yet
    assert model.in_hours_idle_times_s == ()
    assert OFFICE.off_hours_keep_alive(model) == OFFICE.windows(model)[1]


def test_a_model_saved_before_in_hours_idle_times_loads_and_keeps_the_plain_keep_alive() -> None:
    trained = office_weeks(OFFICE, 2)
    saved = trained.to_json()
    del saved["in_hours_idle_times_s"]
    old = ArrivalModel.from_json(json.loads(json.dumps(saved)))
    assert old.in_hours_idle_times_s == () and old.slot_periods == trained.slot_periods
    assert OFFICE.off_hours_keep_alive(old) == OFFICE.windows(old)[1]
    assert ArrivalModel.from_json(json.loads(json.dumps(trained.to_json()))) == trained


@settings(max_examples=50, deadline=None)
@given(
    gaps=st.lists(st.floats(1, 20_000), min_size=1, max_size=120),
    floor_s=st.floats(0, 3600),
)
def test_the_off_hours_keep_alive_stays_within_the_floor_and_the_plain_keep_alive(
    gaps: list[float], floor_s: float
) -> None:
    warmer = LearnedWarmer(
        period_s=86_400, slots=24, min_samples=3, max_samples=16, off_hours_keep_alive_floor_s=floor_s
    )
    model, t = ArrivalModel(), 0.0
    for gap in gaps:
        model = busy(warmer, model, t, t + 5)
        t += 5 + gap
    keep_alive = warmer.windows(model)[1]
    assert min(floor_s, keep_alive) <= warmer.off_hours_keep_alive(model) <= keep_alive
    assert len(model.in_hours_idle_times_s) <= warmer.max_samples
    assert list(model.in_hours_idle_times_s) == sorted(model.in_hours_idle_times_s)


def test_bad_keep_alive_floors_and_cold_start_leads_fail_naming_the_field() -> None:
    with pytest.raises(ValueError, match="off_hours_keep_alive_floor_s"):
        LearnedWarmer(off_hours_keep_alive_floor_s=5 * 3600)
    learned = {"learned": {"off_hours_keep_alive_floor_s": 5 * 3600}}
    with pytest.raises(ValidationError, match="off_hours_keep_alive_floor_s"):
        AppSettings.model_validate({"llm": {"autoscaling": {"policy": learned}}})
    with pytest.raises(ValidationError, match="factor"):
        AppSettings.model_validate({"llm": {"autoscaling": {"policy": {"cold_start_lead": {"factor": -1}}}}})
    with pytest.raises(ValueError, match="factor"):
        ColdStartLead(factor=-1)


# ------------------------------------------------------------------------------- lead from the cold start


def test_the_cold_start_lead_follows_its_worked_example() -> None:
    lead = ColdStartLead(factor=1.5)
    starts = ColdStarts(samples_s=(11.0, 12.0, 25.0))
    assert lead.measured_s(starts) == 25.0
    assert lead.lead_s(30.0, starts) == 37.5 and lead.lead_s(120.0, starts) == 120.0
    assert lead.lead_s(30.0, ColdStarts()) == 30.0  # nothing measured yet: the configured lead
    assert ColdStartLead(factor=0).lead_s(30.0, starts) == 30.0
    assert ColdStartLead(max_lead_s=20).lead_s(10.0, starts) == 20.0


def test_the_cold_start_lead_keeps_only_the_last_starts() -> None:
    lead, starts = ColdStartLead(max_samples=2), ColdStarts()
    for t, took in ((0.0, 100.0), (1000.0, 10.0), (2000.0, 12.0)):
        starts = lead.observe(starts, t, running=0, asked=1)
        starts = lead.observe(starts, t + took, running=1, asked=1)
    assert starts.samples_s == (10.0, 12.0)


def context(now: float, ongoing: float, running: int) -> Any:
    return SimpleNamespace(
        current_time=now,
        total_num_requests=ongoing,
        total_queued_requests=0.0,
        current_num_replicas=running,
        aggregated_metrics={},
        policy_state={},
        app_name="surge",
        deployment_name="LLMServer",
    )


def scheduled_policy(tmp_path: Any) -> SurgeAutoscalingPolicy:
    """Monday 09:00-10:00 held, configured lead 120 s, cold-start lead 1.5x the measured p90."""
    kwargs = AutoscalingSettings(
        min_replicas=0,
        max_replicas=2,
        policy={
            "replica_policy": "slo",
            "schedule": {"windows": [{"days": ["mon"], "start": "09:00", "end": "10:00"}], "lead_s": 120},
        },
    ).to_serve(capacity_per_replica=8)["policy"]["policy_kwargs"]
    assert kwargs["cold_start_lead"] == {"factor": 1.5, "max_lead_s": 3600.0}
    return SurgeAutoscalingPolicy(**{**kwargs, "state_dir": str(tmp_path)})


def test_the_policy_times_a_start_from_its_ask_to_the_first_running_replica(tmp_path: Any) -> None:
    policy = scheduled_policy(tmp_path)
    policy(context(at(0, 0, 8, 58), 0, 0))  # the window's lead: asks for one, none running
    policy(context(at(0, 0, 8, 58, 10), 0, 0))
    policy(context(at(0, 0, 8, 58, 40), 0, 1))  # running 40 s after the ask
    assert policy.cold_starts["surge__LLMServer"].samples_s == (40.0,)


def test_an_ask_withdrawn_before_a_replica_ran_does_not_start_the_clock(tmp_path: Any) -> None:
    policy = scheduled_policy(tmp_path)
    policy(context(at(0, 2, 12, 0), 3, 0))  # requests at zero: asks for one
    policy(context(at(0, 2, 12, 0, 1), 0, 0))  # they went away: asks for none
    policy(context(at(0, 2, 13, 0), 3, 0))  # asks again an hour later
    policy(context(at(0, 2, 13, 0, 20), 3, 1))
    assert policy.cold_starts["surge__LLMServer"].samples_s == (20.0,)  # not from 12:00


def test_the_warmers_pre_warm_by_one_and_a_half_times_the_measured_cold_start(tmp_path: Any) -> None:
    policy = scheduled_policy(tmp_path)
    assert policy(context(at(1, 0, 8, 50), 0, 0))[0] == 0  # nothing measured: the configured 120 s
    policy = scheduled_policy(tmp_path)
    policy(context(at(0, 0, 8, 58), 0, 0))
    policy(context(at(0, 0, 9, 8), 0, 1))  # a 10-minute start
    assert policy(context(at(1, 0, 8, 44), 0, 0))[0] == 0
    assert policy(context(at(1, 0, 8, 46), 0, 0))[0] == 1  # within 15 min (1.5 x 10) of 09:00


def test_measured_starts_survive_a_controller_restart_and_set_the_first_lead_after_it(tmp_path: Any) -> None:
    policy = scheduled_policy(tmp_path)
    policy(context(at(0, 0, 8, 58), 0, 0))
    policy(context(at(0, 0, 9, 8), 0, 1))  # a 10-minute start, measured by the first controller
    restarted = scheduled_policy(tmp_path)  # a new controller: nothing in memory
    assert restarted(context(at(1, 0, 8, 44), 0, 0))[0] == 0
    assert restarted(context(at(1, 0, 8, 46), 0, 0))[0] == 1  # 15 min ahead, not the configured 120 s
    assert restarted.cold_starts["surge__LLMServer"].samples_s == (600.0,)


@pytest.mark.parametrize("content", ["{", '{"samples_s": "x"}', '{"other": 1}', '{"samples_s": [-5, 1e12]}'])
def test_an_unreadable_or_nonsensical_cold_start_file_costs_the_memory_not_the_autoscaler(
    tmp_path: Any, content: str
) -> None:
    (tmp_path / "surge__LLMServer.cold_starts.json").write_text(content)
    policy = scheduled_policy(tmp_path)
    assert policy(context(at(1, 0, 8, 50), 0, 0))[0] == 0  # the configured 120 s lead stands
    assert policy(context(at(1, 0, 8, 58, 30), 0, 0))[0] == 1
    assert policy.cold_starts["surge__LLMServer"].samples_s == ()


def test_a_wake_from_zero_by_serves_fast_path_is_an_arrival_and_a_start_dated_to_the_last_tick_at_zero(
    tmp_path: Any,
) -> None:
    # Serve does not call the policy while requests wait at zero replicas (it starts one itself): the policy
    # sees nothing between 09:00:00 (idle, at zero) and 09:00:25 (a replica running, requests in flight).
    policy = SurgeAutoscalingPolicy(
        warmers=[{"kind": "learned", "period_s": 86_400, "slots": 24}], state_dir=str(tmp_path)
    )
    policy(context(at(0, 0, 9, 0), 0, 0))
    policy(context(at(0, 0, 9, 0, 25), 2, 1))
    model = policy.models["surge__LLMServer"]
    assert model.arrivals == 1 and model.hits == 0  # it found no replica
    assert model.slot_periods[9] == 1  # learned at 09:00, not at whenever the replica ran
    assert policy.cold_starts["surge__LLMServer"].samples_s == (25.0,)


def test_a_wake_whose_requests_were_done_before_the_next_tick_still_counts_as_one(tmp_path: Any) -> None:
    policy = SurgeAutoscalingPolicy(warmers=[{"kind": "learned"}], state_dir=str(tmp_path))
    policy(context(at(0, 0, 9, 0), 0, 0))
    policy(context(at(0, 0, 9, 0, 25), 0, 1))  # a replica the policy did not ask for, nothing in flight
    model = policy.models["surge__LLMServer"]
    assert model.arrivals == 1 and not model.busy and model.last_busy_end == at(0, 0, 9, 0, 25)
    assert policy.cold_starts["surge__LLMServer"].samples_s == (25.0,)


def test_a_replica_the_policy_asked_for_is_timed_from_the_ask_not_taken_for_a_wake(tmp_path: Any) -> None:
    policy = scheduled_policy(tmp_path)
    policy(context(at(0, 0, 8, 58), 0, 0))  # the window's lead asks for one
    policy(context(at(0, 0, 8, 58, 30), 0, 0))
    policy(context(at(0, 0, 8, 59), 1, 1))  # running, a request in flight
    assert policy.cold_starts["surge__LLMServer"].samples_s == (60.0,)


def test_the_settings_reach_the_policy_serve_runs(tmp_path: Any) -> None:
    kwargs = AutoscalingSettings(
        min_replicas=0,
        policy={"learned": {"off_hours_keep_alive_floor_s": 900}, "cold_start_lead": {"factor": 2}},
    ).to_serve(capacity_per_replica=8)["policy"]["policy_kwargs"]
    policy = SurgeAutoscalingPolicy(**{**kwargs, "state_dir": str(tmp_path)})
    learned = policy.warmers[0]
    assert isinstance(learned, LearnedWarmer) and learned.off_hours_keep_alive_floor_s == 900
    assert policy.cold_start_lead == ColdStartLead(factor=2, max_lead_s=3600)
