"""Unit tests of the autoscaling policy (`serve._control.autoscaling`), on a fake clock (plain floats).

Contract: `AutoscalingConfig` (a strict, frozen pydantic model) validates every field and
names it in its error, a TypeError (also a ValueError) for a wrong type and a ValueError for a
wrong value, whether built directly or with `from_dict` (which also accepts Ray 1.x's
target_num_ongoing_requests_per_replica). Load is the sum over
sources of each one's mean report over the look-back window; stale sources count 0 and are
dropped. The policy wants ceil(load / target) replicas, smoothed toward that and clamped to
[min, max]; an upscale or downscale takes effect only after its condition held continuously
for its delay, except 0 -> 1 under load, which is immediate.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from typing import Any

import pydantic
import pytest

from serve._autoscaling_config import AutoscalingConfig
from serve._control.autoscaling import MAX_SAMPLES_PER_SOURCE, AutoscalingPolicy

ALIAS = "target_num_ongoing_requests_per_replica"


def config(**kw: Any) -> AutoscalingConfig:
    """A config with no delays and roomy bounds unless overridden, so single ticks show the target."""
    base: dict[str, Any] = dict(min_replicas=1, max_replicas=100, upscale_delay_s=0.0, downscale_delay_s=0.0)
    return AutoscalingConfig(**{**base, **kw})


def policy_with_load(load: float, now: float = 0.0, **kw: Any) -> AutoscalingPolicy:
    p = AutoscalingPolicy(config(**kw), now=now)
    p.record(now, "caller", load)
    return p


def stored_samples(p: AutoscalingPolicy) -> int:
    return sum(len(s) for s in p._sources.values())


def run(
    p: AutoscalingPolicy, start: int, end: int, current: int, load: Callable[[int], float | None]
) -> tuple[int, list[tuple[int, int]]]:
    """Tick once a second over [start, end): report load(t) from one caller (None: no report), then
    adopt what the policy says, like the controller. Returns the final count and each change as (t, n)."""
    changes: list[tuple[int, int]] = []
    for t in range(start, end):
        value = load(t)
        if value is not None:
            p.record(float(t), "caller", value)
        n = p.desired_replicas(float(t), current)
        if n != current:
            changes.append((t, n))
            current = n
    return current, changes


# -- config ------------------------------------------------------------------------------------


def test_defaults_are_ray_serves() -> None:
    c = AutoscalingConfig.from_dict({})
    assert c == AutoscalingConfig()
    assert (c.min_replicas, c.max_replicas, c.initial_replicas) == (1, 1, None)
    assert c.target_ongoing_requests == 2.0
    assert (c.upscale_delay_s, c.downscale_delay_s) == (30.0, 600.0)
    assert (c.metrics_interval_s, c.look_back_period_s) == (10.0, 30.0)
    assert (c.upscale_smoothing_factor, c.downscale_smoothing_factor) == (1.0, 1.0)


def test_from_dict_takes_every_field() -> None:
    d = dict(
        min_replicas=0, max_replicas=8, initial_replicas=3, target_ongoing_requests=4.5, upscale_delay_s=1.0,
        downscale_delay_s=2.0, metrics_interval_s=0.5, look_back_period_s=5.0, upscale_smoothing_factor=0.5,
        downscale_smoothing_factor=2.0,
    )
    assert AutoscalingConfig.from_dict(d).model_dump() == d


def test_config_is_frozen_and_validated_on_direct_construction() -> None:
    c = AutoscalingConfig()
    with pytest.raises(pydantic.ValidationError, match="frozen"):
        c.max_replicas = 5  # type: ignore[misc]
    with pytest.raises(ValueError, match=r"^autoscaling_config\.min_replicas must be an integer >= 0, got -1$"):
        AutoscalingConfig(min_replicas=-1)
    with pytest.raises(TypeError, match=r"^autoscaling_config\.max_replicas must be an integer >= 1, got 2\.0$"):
        AutoscalingConfig(max_replicas=2.0)
    assert AutoscalingConfig(upscale_delay_s=3).upscale_delay_s == 3.0  # an int where a float is expected


def test_boundary_values_are_accepted() -> None:
    c = AutoscalingConfig.from_dict(
        dict(min_replicas=0, max_replicas=1, initial_replicas=0, upscale_delay_s=0, downscale_delay_s=0,
             metrics_interval_s=0, look_back_period_s=0.001, target_ongoing_requests=0.001,
             upscale_smoothing_factor=0.01, downscale_smoothing_factor=10)
    )
    assert c.min_replicas == 0 and c.initial_replicas == 0 and c.upscale_delay_s == 0


@pytest.mark.parametrize(
    ("d", "names"),
    [
        ({"bogus": 1}, ["bogus", "valid ones are", "min_replicas", "downscale_smoothing_factor", ALIAS]),
        ({"min_replicas": "2"}, ["min_replicas", "integer"]),
        ({"min_replicas": 1.5}, ["min_replicas", "integer"]),
        ({"max_replicas": True}, ["max_replicas", "integer"]),
        ({"initial_replicas": "1"}, ["initial_replicas", "integer"]),
        ({"target_ongoing_requests": "x"}, ["target_ongoing_requests", "number"]),
        ({"target_ongoing_requests": None}, ["target_ongoing_requests", "number"]),
        ({"upscale_delay_s": float("nan")}, ["upscale_delay_s", "must be a number of seconds >= 0, got nan"]),
        ({"upscale_delay_s": float("inf")}, ["upscale_delay_s", "must be a number of seconds >= 0, got inf"]),
        ({"look_back_period_s": [30]}, ["look_back_period_s", "number"]),
        ({"upscale_smoothing_factor": False}, ["upscale_smoothing_factor", "number"]),
        ({"min_replicas": -1}, ["min_replicas", ">= 0"]),
        ({"max_replicas": 0}, ["max_replicas", ">= 1"]),
        ({"min_replicas": 3, "max_replicas": 2}, ["min_replicas", "max_replicas", "raise max_replicas"]),
        ({"min_replicas": 3, "max_replicas": 2, "look_back_period_s": 0}, ["min_replicas", "look_back_period_s"]),
        ({"min_replicas": 3}, ["min_replicas", "max_replicas"]),  # max defaults to 1
        ({"min_replicas": 1, "max_replicas": 3, "initial_replicas": 4}, ["initial_replicas", "[1, 3]"]),
        ({"min_replicas": 1, "max_replicas": 3, "initial_replicas": 0}, ["initial_replicas", "[1, 3]"]),
        ({"target_ongoing_requests": 0}, ["target_ongoing_requests", "> 0"]),
        ({"target_ongoing_requests": -2.0}, ["target_ongoing_requests", "> 0"]),
        ({"upscale_delay_s": -1}, ["upscale_delay_s", ">= 0"]),
        ({"downscale_delay_s": -0.1}, ["downscale_delay_s", ">= 0"]),
        ({"metrics_interval_s": -5}, ["metrics_interval_s", ">= 0"]),
        ({"look_back_period_s": 0}, ["look_back_period_s", "> 0"]),
        ({"upscale_smoothing_factor": 0}, ["upscale_smoothing_factor", "> 0"]),
        ({"downscale_smoothing_factor": -1.0}, ["downscale_smoothing_factor", "> 0"]),
        ({ALIAS: "two"}, [ALIAS, "number"]),
        ({ALIAS: 0}, [ALIAS, "> 0"]),
        ({ALIAS: 3, "target_ongoing_requests": 4}, [ALIAS, "target_ongoing_requests", "give only"]),
    ],
)
def test_from_dict_errors_name_the_field(d: dict[str, Any], names: list[str]) -> None:
    with pytest.raises(ValueError) as e:
        AutoscalingConfig.from_dict(d)
    for name in names:
        assert name in str(e.value), f"{name!r} missing from {e.value}"


def test_from_dict_rejects_a_non_dict() -> None:
    with pytest.raises(TypeError, match="autoscaling_config must be a dict such as"):
        AutoscalingConfig.from_dict([("min_replicas", 1)])  # type: ignore[arg-type]
    assert AutoscalingConfig.from_dict(AutoscalingConfig(max_replicas=3)) == AutoscalingConfig(max_replicas=3)


def test_ray1_alias_means_target_ongoing_requests() -> None:
    assert AutoscalingConfig.from_dict({ALIAS: 5}).target_ongoing_requests == 5
    both = AutoscalingConfig.from_dict({ALIAS: 3, "target_ongoing_requests": 3.0})
    assert both.target_ongoing_requests == 3.0
    # and it drives the policy: load 10 at 5 per replica is 2 replicas
    p = AutoscalingPolicy(AutoscalingConfig.from_dict({ALIAS: 5, "max_replicas": 10, "upscale_delay_s": 0}), 0.0)
    p.record(0.0, "a", 10)
    assert p.desired_replicas(0.0, 1) == 2


def test_initial_replicas() -> None:
    assert AutoscalingPolicy(AutoscalingConfig(min_replicas=2, max_replicas=5), 0.0).initial() == 2
    assert AutoscalingPolicy(AutoscalingConfig(min_replicas=2, max_replicas=5, initial_replicas=4), 0.0).initial() == 4
    assert AutoscalingPolicy(AutoscalingConfig(min_replicas=0, max_replicas=5), 0.0).initial() == 0


# -- load --------------------------------------------------------------------------------------


def test_load_is_the_mean_over_the_window() -> None:
    p = AutoscalingPolicy(config(look_back_period_s=30), 0.0)
    for t, v in [(0, 2), (10, 4), (20, 6)]:
        p.record(float(t), "a", v)
    assert p.load(20.0) == pytest.approx(4.0)  # not the latest (6), not the sum (12)
    # ceil(4 / 2) = 2 replicas
    assert p.desired_replicas(20.0, 1) == 2


def test_samples_older_than_the_window_drop_out() -> None:
    p = AutoscalingPolicy(config(look_back_period_s=30), 0.0)
    p.record(0.0, "a", 100)
    for t in (10, 20, 30, 40):
        p.record(float(t), "a", 2)
    assert p.load(40.0) == pytest.approx(2.0)  # window [10, 40]: the 100 at t=0 is gone
    q = AutoscalingPolicy(config(look_back_period_s=30), 0.0)
    q.record(10.0, "a", 8)
    q.record(40.0, "a", 2)
    assert q.load(40.0) == pytest.approx(5.0)  # the window is closed: t=10 is still in at now=40
    assert q.load(40.5) == pytest.approx(2.0)


def test_sources_add_up() -> None:
    p = AutoscalingPolicy(config(), 0.0)
    p.record(0.0, "a", 2)
    p.record(1.0, "a", 4)
    p.record(1.0, "b", 5)
    p.record(1.0, "c", 0)
    assert p.load(1.0) == pytest.approx(3 + 5 + 0)
    assert p.desired_replicas(1.0, 1) == 4  # ceil(8 / 2)


def test_a_stale_source_counts_zero_and_is_dropped() -> None:
    p = AutoscalingPolicy(config(look_back_period_s=30), 0.0)
    p.record(0.0, "dead", 40)
    for t in range(0, 31, 5):
        p.record(float(t), "alive", 2)
    assert p.desired_replicas(30.0, 1) == 21  # ceil((40 + 2) / 2): t=0 is still in the window
    assert p.load(30.5) == pytest.approx(2.0)
    assert "dead" not in p._sources
    assert p.desired_replicas(31.0, 21) == 1


def test_forget_removes_a_source_at_once() -> None:
    p = AutoscalingPolicy(config(), 0.0)
    p.record(0.0, "a", 6)
    p.record(0.0, "b", 4)
    p.forget("a")
    p.forget("never-seen")
    assert p.load(0.0) == pytest.approx(4.0)
    assert p.desired_replicas(0.0, 1) == 2


def test_out_of_order_reports_stay_time_ordered() -> None:
    p = AutoscalingPolicy(config(look_back_period_s=30), 0.0)
    p.record(10.0, "a", 4)
    p.record(5.0, "a", 100)  # arrives late, stamped earlier
    assert p.load(10.0) == pytest.approx(52.0)
    assert p.load(36.0) == pytest.approx(4.0)  # window [6, 36]: the t=5 sample is out, t=10 in


@pytest.mark.parametrize("bad", [-1, float("nan"), float("inf"), "3", None, True])
def test_record_rejects_bad_values(bad: Any) -> None:
    p = AutoscalingPolicy(config(), 0.0)
    with pytest.raises(ValueError, match="caller-7"):
        p.record(0.0, "caller-7", bad)
    assert p.load(0.0) == 0.0


# -- target count -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("load", "target", "want"),
    [(10, 2, 5), (10.5, 2, 6), (0.1, 2, 1), (4, 2, 2), (4.01, 2, 3), (1, 0.5, 2), (0, 2, 1)],
)
def test_desired_is_ceil_of_load_over_target(load: float, target: float, want: int) -> None:
    p = policy_with_load(load, target_ongoing_requests=target)
    assert p.desired_replicas(0.0, 1) == want


def test_float_noise_does_not_add_a_replica() -> None:
    p = AutoscalingPolicy(config(target_ongoing_requests=0.1), 0.0)
    p.record(0.0, "a", 0.1)
    p.record(0.0, "b", 0.2)
    assert p.load(0.0) / 0.1 > 3  # 3.0000000000000004
    assert p.desired_replicas(0.0, 1) == 3


def test_clamped_to_max_and_min() -> None:
    assert policy_with_load(1000, max_replicas=7).desired_replicas(0.0, 1) == 7
    assert policy_with_load(0, min_replicas=3, max_replicas=7).desired_replicas(0.0, 5) == 3
    assert policy_with_load(3, min_replicas=3, max_replicas=7).desired_replicas(0.0, 5) == 3


def test_current_outside_the_bounds_is_corrected_at_once() -> None:
    # e.g. the config changed under a running deployment: no delay, no matter the load
    slow = dict(min_replicas=2, max_replicas=4, upscale_delay_s=1000.0, downscale_delay_s=1000.0)
    assert policy_with_load(0, **slow).desired_replicas(0.0, 9) == 4
    assert policy_with_load(1000, **slow).desired_replicas(0.0, 9) == 4
    assert policy_with_load(1000, **slow).desired_replicas(0.0, 0) == 2
    assert policy_with_load(0, **slow).desired_replicas(0.0, 1) == 2


def test_upscale_smoothing() -> None:
    # desired = current + factor * (raw - current), rounded up
    assert policy_with_load(20, upscale_smoothing_factor=0.5).desired_replicas(0.0, 2) == 6  # 2 + 0.5 * 8
    assert policy_with_load(8, upscale_smoothing_factor=0.25).desired_replicas(0.0, 1) == 2  # ceil(1.75)
    assert policy_with_load(8, upscale_smoothing_factor=2.0).desired_replicas(0.0, 2) == 6  # 2 + 2 * 2
    assert policy_with_load(8, upscale_smoothing_factor=2.0, max_replicas=5).desired_replicas(0.0, 2) == 5
    # the downscale factor plays no part in an upscale
    assert policy_with_load(20, downscale_smoothing_factor=0.1).desired_replicas(0.0, 2) == 10


def test_downscale_smoothing() -> None:
    # rounded down: every downscale moves by at least one
    assert policy_with_load(2, downscale_smoothing_factor=0.5).desired_replicas(0.0, 10) == 5  # floor(5.5)
    assert policy_with_load(2, downscale_smoothing_factor=0.1).desired_replicas(0.0, 3) == 2  # floor(2.8)
    assert policy_with_load(4, downscale_smoothing_factor=0.5).desired_replicas(0.0, 2) == 2  # no change
    # the upscale factor plays no part in a downscale
    assert policy_with_load(2, upscale_smoothing_factor=0.1).desired_replicas(0.0, 10) == 1


def test_smoothed_downscale_converges_step_by_step() -> None:
    p = AutoscalingPolicy(config(downscale_smoothing_factor=0.5), 0.0)
    seen, current = [], 10
    for t in range(6):
        p.record(float(t), "a", 2)  # raw target 1
        current = p.desired_replicas(float(t), current)
        seen.append(current)
    assert seen == [5, 3, 2, 1, 1, 1]  # floor(10 - 4.5), floor(5 - 2), floor(3 - 1), floor(2 - 0.5)


# -- delays -------------------------------------------------------------------------------------


def test_upscale_waits_for_the_delay() -> None:
    p = AutoscalingPolicy(config(upscale_delay_s=30.0), 0.0)
    final, changes = run(p, 0, 60, 1, lambda t: 10)
    assert changes == [(30, 5)]
    assert final == 5


def test_upscale_timer_resets_when_load_dips() -> None:
    p = AutoscalingPolicy(config(upscale_delay_s=30.0, look_back_period_s=0.5), 0.0)
    # high for 0..19, one quiet second at 20, high again from 21: the 30 s count restarts at 21
    _, changes = run(p, 0, 80, 1, lambda t: 0 if t == 20 else 10)
    assert changes == [(51, 5)]


def test_upscale_timer_resets_when_the_condition_flips_to_downscale() -> None:
    p = AutoscalingPolicy(config(upscale_delay_s=30.0, downscale_delay_s=1000.0, look_back_period_s=0.5), 0.0)
    _, changes = run(p, 0, 80, 3, lambda t: 0 if 10 <= t < 12 else 10)
    assert changes == [(42, 5)]


def test_downscale_waits_for_the_delay_and_resets() -> None:
    p = AutoscalingPolicy(config(downscale_delay_s=600.0, look_back_period_s=0.5), 0.0)
    # idle, except a burst at t=100 that matches the current 5: the downscale count restarts at 101
    final, changes = run(p, 0, 1000, 5, lambda t: 10 if t == 100 else 0)
    assert changes == [(701, 1)]
    assert final == 1


def test_no_upscale_delay_means_immediate() -> None:
    p = AutoscalingPolicy(config(upscale_delay_s=0.0, downscale_delay_s=0.0), 0.0)
    p.record(0.0, "a", 10)
    assert p.desired_replicas(0.0, 1) == 5


def test_each_step_waits_its_own_delay() -> None:
    """Design choice: the delay is measured at one current count, so a rising load that crossed the
    delay once does not then upscale again at every tick without waiting."""
    p = AutoscalingPolicy(config(upscale_delay_s=30.0, look_back_period_s=0.5), 0.0)
    _, changes = run(p, 0, 100, 1, lambda t: 10 if t < 40 else 16)
    assert changes == [(30, 5), (70, 8)]


def test_a_decision_repeats_until_the_controller_adopts_it() -> None:
    p = AutoscalingPolicy(config(upscale_delay_s=30.0), 0.0)
    for t in range(30):
        p.record(float(t), "a", 10)
        assert p.desired_replicas(float(t), 1) == 1
    for t in range(30, 35):  # the controller still reports 1: the answer stays 5, no flapping back
        p.record(float(t), "a", 10)
        assert p.desired_replicas(float(t), 1) == 5


# -- zero -----------------------------------------------------------------------------------------


def test_scale_to_zero_after_the_downscale_delay() -> None:
    p = AutoscalingPolicy(config(min_replicas=0, downscale_delay_s=600.0), 0.0)
    _, changes = run(p, 0, 700, 2, lambda t: 0)
    assert changes == [(600, 0)]


def test_no_scale_to_zero_while_there_is_any_load() -> None:
    p = policy_with_load(0.01, min_replicas=0, downscale_smoothing_factor=5.0)
    assert p.desired_replicas(0.0, 3) == 1  # floor(3 + 5 * (1 - 3)) < 0, but there is load


def test_idle_at_zero_stays_at_zero() -> None:
    p = AutoscalingPolicy(config(min_replicas=0, upscale_delay_s=0.0), 0.0)
    _, changes = run(p, 0, 100, 0, lambda t: None)
    assert changes == []


def test_scale_from_zero_skips_the_upscale_delay() -> None:
    p = AutoscalingPolicy(config(min_replicas=0, upscale_delay_s=30.0), 0.0)
    assert p.desired_replicas(0.0, 0) == 0
    p.record(5.0, "a", 0.5)
    assert p.desired_replicas(5.0, 0) == 1  # at once, despite the 30 s delay


def test_scale_from_zero_goes_to_one_then_waits_to_go_further() -> None:
    p = AutoscalingPolicy(config(min_replicas=0, upscale_delay_s=30.0), 0.0)
    _, changes = run(p, 0, 100, 0, lambda t: 10 if t >= 10 else None)
    assert changes == [(10, 1), (41, 5)]  # 1 at once; 5 after 30 s at one replica (from t=11)


# -- memory ---------------------------------------------------------------------------------------


def test_memory_is_bounded_over_a_long_run() -> None:
    p = AutoscalingPolicy(config(look_back_period_s=30), 0.0)
    peak = 0
    for i in range(10_000):
        t = i * 1.0  # 10,000 samples over ~2.8 hours, three sources taking turns
        p.record(t, f"caller-{i % 3}", i % 7)
        peak = max(peak, stored_samples(p))
    assert peak <= 31 + 3  # one window's worth (t-30 .. t), plus boundary slack
    assert len(p._sources) == 3
    assert p.desired_replicas(10_000.0, 1) >= 1


def test_sources_that_come_and_go_do_not_accumulate() -> None:
    # every report from a new caller and no desired_replicas calls at all: stale callers still go
    p = AutoscalingPolicy(config(look_back_period_s=30), 0.0)
    peak = 0
    for i in range(10_000):
        p.record(i * 1.0, f"caller-{i}", 1)
        peak = max(peak, len(p._sources))
    assert peak <= 2 * 31
    assert stored_samples(p) <= 2 * 31


def test_a_source_flooding_reports_is_capped() -> None:
    p = AutoscalingPolicy(config(look_back_period_s=30), 0.0)
    for i in range(10_000):
        p.record(i * 0.001, "chatty", 4)  # 10,000 reports within 10 s, all in the window
    assert stored_samples(p) == MAX_SAMPLES_PER_SOURCE
    assert p.load(10.0) == pytest.approx(4.0)


# -- scenario -------------------------------------------------------------------------------------


@pytest.mark.parametrize("end", ["report-zero", "callers-vanish"])
def test_steady_load_then_quiet(end: str) -> None:
    """Two callers with 5 in flight each, reporting every metrics_interval_s; target 2 per replica."""
    cfg = AutoscalingConfig.from_dict(
        dict(min_replicas=1, max_replicas=10, target_ongoing_requests=2, upscale_delay_s=30,
             downscale_delay_s=600, metrics_interval_s=10, look_back_period_s=30)
    )
    p = AutoscalingPolicy(cfg, now=0.0)
    current = p.initial()
    changes: list[tuple[int, int]] = []
    for t in range(0, 1500):
        if t % 10 == 0:
            for caller in ("a", "b"):
                if t < 100:
                    p.record(float(t), caller, 5)
                elif end == "report-zero":
                    p.record(float(t), caller, 0)
        n = p.desired_replicas(float(t), current)
        assert cfg.min_replicas <= n <= cfg.max_replicas
        if n != current:
            changes.append((t, n))
            current = n
    if end == "report-zero":
        # at t=100 the window [70, 100] averages 3.75 per caller: 7.5 in flight wants 4 < 5, the
        # downscale count starts; by t=700 the load is 0 and the deployment goes to min at once
        assert changes == [(30, 5), (700, 1)]
    else:
        # the last reports are from t=90; they leave the window after t=120, load reads 0 from t=121
        assert changes == [(30, 5), (721, 1)]
    assert current == 1
    assert p.load(1500.0) == 0.0
    if end == "callers-vanish":
        assert not p._sources


def test_policy_never_leaves_the_bounds_under_random_load() -> None:
    rng = random.Random(7)
    cfg = config(min_replicas=2, max_replicas=9, upscale_delay_s=3, downscale_delay_s=5, look_back_period_s=4,
                 upscale_smoothing_factor=0.7, downscale_smoothing_factor=1.5)
    p = AutoscalingPolicy(cfg, 0.0)
    current = p.initial()
    for t in range(2000):
        p.record(float(t), f"c{rng.randrange(5)}", rng.choice([0, 0, 1, 5, 30]))
        n = p.desired_replicas(float(t), current)
        assert 2 <= n <= 9
        assert not math.isnan(p.load(float(t)))
        current = n
