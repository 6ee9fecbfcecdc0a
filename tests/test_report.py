"""The bottleneck analysis on numbers: time splits, capacities, verdicts and advice."""
import dataclasses
import math
import time

import pytest

from rltpu import report
from rltpu.types import ActorTimings


def measurements(wait_data, update, actor_idle, *, num_actors=2, cpus=16, train_s=100.0,
                 env_steps=100_000, actor_busy=170.0, host_to_device=2.0, publish=5.0):
    """A run whose learner waited ``wait_data`` s and whose actors idled ``actor_idle`` s."""
    return report.Measurements(
        num_actors=num_actors, num_devices=2, env_steps=env_steps, train_s=train_s, cpus=cpus,
        actor_s={"env": 0.6 * actor_busy, "inference": 0.3 * actor_busy,
                 "params": 0.05 * actor_busy, "send": 0.05 * actor_busy, "idle": actor_idle},
        learner_s={"wait_data": wait_data, "host_to_device": host_to_device,
                   "update": update, "publish": publish})


def test_actor_bound_verdict_and_how_many_more_actors():
    # The learner works 37 s of 100 -> 100_000 / 37 = 2702.7 steps/s; actors make
    # 100_000 steps in 170 busy s -> 588.2 steps/s each; 2702.7 / 588.2 = 4.59 -> 5 actors.
    r = report.analyse(measurements(wait_data=63.0, update=30.0, actor_idle=2.0))
    assert r["verdict"] == "actor-bound"
    assert r["message"].startswith("learner waited for data 63% of the time: actor-bound; "
                                   "about 3 more actors would keep it busy")
    assert r["learner_sps"] == pytest.approx(100_000 / 37)
    assert r["actor_sps_each"] == pytest.approx(100_000 / 170)
    assert r["learner_sps_per_device"] == pytest.approx(100_000 / 37 / 2)
    assert r["actors_to_keep_learner_busy"] == 5
    assert r["learner_time"]["wait_data"] == pytest.approx(0.63)
    assert r["learner_time"]["other"] == pytest.approx(1 - 0.63 - 0.02 - 0.30 - 0.05)
    assert r["device_busy"] == pytest.approx(0.30)
    assert sum(r["actor_time"].values()) == pytest.approx(1.0)
    assert "CPU" not in r["message"]  # 16 CPUs: room for 5 actors


def test_actor_bound_on_too_few_cpus_says_so_and_names_the_actors_cost():
    r = report.analyse(measurements(wait_data=63.0, update=30.0, actor_idle=2.0, cpus=2))
    assert r["verdict"] == "actor-bound"
    assert "this machine has 2" in r["message"]
    assert "mostly to env stepping, 59%" in r["message"]  # 102 of 172 actor-s


def test_one_more_actor_is_singular():
    r = report.analyse(measurements(wait_data=30.0, update=60.0, actor_idle=0.0,
                                    actor_busy=150.0, host_to_device=0.0, publish=0.0))
    # learner 100_000 / 70 = 1428.6; actor 100_000 / 150 = 666.7 -> 2.14 -> 3 actors
    assert r["actors_to_keep_learner_busy"] == 3
    assert "about 1 more actor would keep it busy" in r["message"]


def test_learner_bound_verdict():
    # Devices busy 90 s of 100, learner never waited; actors idle 120 of 290 actor-s.
    r = report.analyse(measurements(wait_data=1.0, update=90.0, actor_idle=120.0,
                                    num_actors=4))
    assert r["verdict"] == "learner-bound"
    assert r["message"].startswith("actors waited for the learner 41% of the time and the "
                                   "learner waited for data only 1%: learner-bound")
    assert "devices were busy 90%" in r["message"]
    # learner 100_000 / 99 = 1010 steps/s; an actor 588 -> 2 of the 4 keep up
    assert r["actors_to_keep_learner_busy"] == 2
    assert "2 of the 4 actors would keep up" in r["message"]


def test_queue_bound_and_balanced():
    queue_bound = report.analyse(measurements(wait_data=40.0, update=30.0, actor_idle=100.0))
    assert queue_bound["verdict"] == "queue-bound"
    assert "--max-in-flight" in queue_bound["message"]
    balanced = report.analyse(measurements(wait_data=10.0, update=80.0, actor_idle=10.0))
    assert balanced["verdict"] == "balanced"
    assert balanced["message"].startswith("learner waited for data 10% and actors waited for "
                                          "the learner 6% of the time: balanced")


def test_thresholds_are_at_a_quarter():
    at = report.analyse(measurements(wait_data=25.0, update=60.0, actor_idle=0.0))
    below = report.analyse(measurements(wait_data=24.0, update=60.0, actor_idle=0.0))
    assert at["verdict"] == "actor-bound" and below["verdict"] == "balanced"


def test_plan_is_startup_plus_steps_at_measured_rate():
    p = report.plan(1_000_000, env_sps=2_000.0, startup_s=30.0)
    assert p == {"env_steps": 1_000_000, "env_sps": 2_000.0, "estimated_wall_s": 530.0}
    assert math.isinf(report.plan(10, env_sps=0.0, startup_s=1.0)["estimated_wall_s"])


def test_format_report_has_every_line():
    r = report.analyse(measurements(wait_data=63.0, update=30.0, actor_idle=2.0))
    text = report.format_report(r, report.plan(1_000_000, 2_000.0, 30.0))
    assert "actors:  env stepping 59%, policy inference 30%" in text
    assert "learner: waiting for data 63%" in text and "devices busy 30%" in text
    assert "588 env steps/s per actor, 1,351 per learner device" in text
    assert "verdict: learner waited for data 63%" in text
    assert "1,000,000 env steps would take about 8m50s" in text


def test_timer_gives_waiting_during_an_update_to_the_update():
    timer = report.RunTimer()
    timer.start()
    # dispatch at 0; the update computes until 3; the loop waits for data 1..5 and copies
    # 5..6; the devices were idle (waiting for data) only from 3 to 5.
    timer._marks = {"dispatch": 0.0, "wait": 1.0, "got": 5.0, "copied": 6.0, "fetched": 6.5,
                    "published": 7.0}
    timer.end_update(ready=3.0)
    assert timer.learner == {"update": 3.0, "wait_data": 2.0, "host_to_device": 1.0,
                             "publish": 0.5}
    # an update still computing when its batch is copied: all the waiting is the update's
    timer._marks = {"dispatch": 10.0, "wait": 10.1, "got": 12.0, "copied": 13.0,
                    "fetched": 20.0}
    timer.end_update(ready=20.0)
    assert timer.learner == {"update": 13.0, "wait_data": 2.0, "host_to_device": 1.0,
                             "publish": 0.5}


def test_timer_intervals_and_actor_timings():
    timer = report.RunTimer()
    timer.add_unroll(ActorTimings(env_s=3.0, inference_s=1.0, params_s=0.0, send_s=0.0,
                                  idle_s=4.0))
    dispatched = time.perf_counter()
    timer.mark("dispatch", at=dispatched)
    timer.end_update(ready=dispatched + 1.0)  # one second of update compute
    row = timer.interval(wall_s=2.0)
    assert row["actor/env"] == pytest.approx(3 / 8) and row["actor/idle"] == pytest.approx(0.5)
    assert row["learner/update"] == pytest.approx(0.5)
    assert row["learner/wait_data"] == 0.0
    # the next interval counts only what came after
    timer.add_unroll(ActorTimings(env_s=1.0))
    row = timer.interval(wall_s=1.0)
    assert row["actor/env"] == 1.0 and row["learner/update"] == 0.0
    measured = timer.measurements(num_actors=1, num_devices=1, env_steps=10, train_s=3.0,
                                  cpus=2)
    assert measured.actor_s["env"] == 4.0
    assert measured.learner_s["update"] == pytest.approx(1.0)


def test_timer_on_policy_order_collects_after_publishing():
    # on-policy: the update computes 0..2, params are published 2..2.5, and only then the
    # loop waits for unrolls acted with them (2.5..6): all of that wait is the devices idle.
    timer = report.RunTimer()
    timer._marks = {"dispatch": 0.0, "fetched": 2.0, "published": 2.5, "wait": 2.5,
                    "got": 6.0, "copied": 6.5}
    timer.end_update(ready=2.0)
    assert timer.learner == {"update": 2.0, "wait_data": 3.5, "host_to_device": 0.5,
                             "publish": 0.5}


def test_on_policy_runs_are_judged_by_which_turn_is_longer():
    # On-policy both sides wait by design: no "queue-bound", and no --max-in-flight advice.
    acting_longer = report.analyse(dataclasses.replace(
        measurements(wait_data=60.0, update=30.0, actor_idle=80.0), on_policy=True))
    assert acting_longer["verdict"] == "actor-bound"
    assert acting_longer["message"].startswith("on-policy, actors and learner take turns: the "
                                               "learner waited for data 60% of the time and "
                                               "learned the other 40%: actor-bound")
    assert "--max-in-flight" not in acting_longer["message"]
    learning_longer = report.analyse(dataclasses.replace(
        measurements(wait_data=42.0, update=47.0, actor_idle=20.0), on_policy=True))
    assert learning_longer["verdict"] == "learner-bound"


def test_actor_inference_bound_runs_beside_an_accelerator_are_told_to_try_central():
    # inference 30% of the actors' busy time: below the threshold, no advice
    base = measurements(wait_data=63.0, update=30.0, actor_idle=2.0)
    assert "--inference central" not in report.analyse(
        dataclasses.replace(base, accelerator=True))["message"]
    heavy = dataclasses.replace(base, accelerator=True, actor_s={
        "env": 40.0, "inference": 120.0, "params": 5.0, "send": 5.0, "idle": 2.0})
    r = report.analyse(heavy)
    # inference 120 of 170 busy seconds = 71%
    assert r["message"].endswith("the actors spend 71% of their busy time in policy inference "
                                 "and the learner has an accelerator: try --inference central "
                                 "(the learner host acts for them, batched)")
    # not on a CPU learner: there, central inference only moves the work
    assert "--inference central" not in report.analyse(
        dataclasses.replace(heavy, accelerator=False))["message"]


def test_central_inference_splits_the_learner_hosts_time():
    m = dataclasses.replace(measurements(wait_data=10.0, update=40.0, actor_idle=10.0),
                            inference="central", inference_s=25.0)
    r = report.analyse(m)
    assert r["learner_host"] == {"inference": 0.25, "update": 0.40}
    text = report.format_report(r)
    assert ("learner host: policy inference 25%, update compute 40% of the wall time "
            "(central inference, beside the updates)") in text
    assert "central inference: the actors' idle time is their Ray round trips" in r["message"]
    assert "learner host" not in report.format_report(report.analyse(
        measurements(wait_data=10.0, update=40.0, actor_idle=10.0)))


def test_central_inference_counts_round_trips_as_acting():
    # 100 s of env, 20 of inference, 60 of round trips: an actor-bound central run says the
    # round trips are where its actors' time goes (not that they waited for the learner)
    m = dataclasses.replace(measurements(wait_data=63.0, update=30.0, actor_idle=0.0, cpus=2),
                            inference="central", actor_s={
                                "env": 100.0, "inference": 20.0, "params": 0.0, "send": 0.0,
                                "idle": 60.0})
    r = report.analyse(m)
    assert r["verdict"] == "actor-bound"
    assert r["actor_sps_each"] == pytest.approx(100_000 / 180.0)
    assert "(its time goes mostly to env stepping, 56%)" in r["message"]
    m = dataclasses.replace(m, actor_s={"env": 10.0, "inference": 20.0, "params": 0.0,
                                        "send": 0.0, "idle": 70.0})
    assert "(its time goes mostly to Ray round trips, 70%)" in report.analyse(m)["message"]
