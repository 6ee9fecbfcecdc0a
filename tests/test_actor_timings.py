"""Where an actor's time goes, as it reports it with each unroll."""
import time

import jax

from rltpu import agents
from rltpu import devices
from rltpu.actor import RolloutActor
from rltpu.config import RunConfig
from rltpu.types import ActorTimings

IMPALA = agents.get("impala")


def make_actor(env_id, num_envs=2, unroll_length=6):
    run = RunConfig(env=env_id, envs_per_actor=num_envs, unroll_length=unroll_length,
                    batch_size=num_envs)
    actor = RolloutActor(0, IMPALA, IMPALA.Config(hidden_sizes=(16,)), run, seed=0)
    fns = IMPALA.build(_spec(actor), IMPALA.Config(hidden_sizes=(16,)), run)
    actor.set_params(1, devices.to_host(jax.jit(fns.init)(jax.random.key(0)).params))
    return actor


def _spec(actor):
    from rltpu.types import EnvSpec
    return EnvSpec("fake", actor.env.single_observation_space, actor.env.single_action_space)


def test_env_time_is_measured_and_phases_fit_in_the_unroll():
    # SlowCountingEnv sleeps 5 ms a step: 6 steps x 2 envs (stepped one after the other).
    unroll = make_actor("rltpu.envs.fake:SlowCountingEnv").unroll_with_current()
    t = unroll.timings
    assert isinstance(t, ActorTimings)
    assert t.env_s >= 6 * 2 * 0.005
    assert t.inference_s > 0 and t.send_s > 0
    assert t.env_s + t.inference_s + t.send_s <= unroll.acting_s
    assert t.params_s == 0 and t.idle_s == 0  # only unroll() sees requests


def test_idle_is_the_gap_between_requests_and_params_time_is_measured():
    """Bounds from the test's own clock readings around the calls, so they hold however
    loaded the machine is: idle runs from the first unroll's return to the second's start,
    then come the params check and the acting, one after the other, inside the calls."""
    actor = make_actor("rltpu.envs.fake:CountingEnv")
    before_first = time.perf_counter()
    first = actor.unroll(1, [None])  # version 1 is what it has: no fetch (None is no ref)
    returned = time.perf_counter()
    assert first.timings.idle_s == 0.0  # nothing came before the first request
    time.sleep(0.2)  # the next request arrives late: back-pressure
    asked = time.perf_counter()
    second = actor.unroll(1, [None])
    done = time.perf_counter()
    t = second.timings
    assert 0.2 <= asked - returned <= t.idle_s
    assert t.params_s >= 0 and t.env_s + t.inference_s + t.send_s <= second.acting_s
    # the first unroll's acting came before its return, the second's idle began there
    assert t.idle_s + t.params_s + second.acting_s <= done - before_first - first.acting_s
