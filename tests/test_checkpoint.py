"""Checkpoints with real orbax and a real learner: bitwise round trips, what is kept, and
damaged checkpoints that resume must skip (or refuse) without changing anything."""
import dataclasses
import json
import os
import shutil
import time

import jax
import numpy as np
import pytest

from rltpu import agents
from rltpu import checkpoint, checkpointer, devices, resume
from rltpu import envs as rltpu_envs
from rltpu.actor import RolloutActor
from rltpu.config import RunConfig
from rltpu.learner import Learner, stack_unrolls
from rltpu.types import TrainState

IMPALA = agents.get("impala")
ENV = "rltpu.envs.fake:CountingEnv"
T, B = 6, 4


@pytest.fixture(scope="module")
def setup():
    actor = RolloutActor(0, IMPALA, IMPALA.Config(),
                         RunConfig(env=ENV, envs_per_actor=B, unroll_length=T, batch_size=B), seed=1)
    spec = rltpu_envs.make_spec(ENV)
    fns = IMPALA.build(spec, IMPALA.Config())
    learner = Learner(fns, spec, devices.make_mesh(1), seed=3, unroll_length=T, batch_size=B)
    actor.set_params(0, learner.host_params())
    batches = [stack_unrolls([actor.unroll_with_current()]) for _ in range(4)]
    return fns, spec, learner, batches


def make_checkpointer(run_dir, **run_flags):
    run = RunConfig(env=ENV, run_dir=str(run_dir), checkpoint_every_updates=1, **run_flags)
    return checkpointer.Checkpointer(str(run_dir), run, {"run": dataclasses.asdict(run),
                                                       "agent": dataclasses.asdict(IMPALA.Config())})


def leaves(state: TrainState):
    return jax.tree.leaves(checkpoint.host_state(state))


def assert_bitwise_equal(a, b):
    assert len(a) == len(b)
    for x, y in zip(a, b):
        x, y = np.asarray(x), np.asarray(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        assert x.tobytes() == y.tobytes()


def test_restore_is_bitwise_and_training_continues_identically(setup, tmp_path):
    fns, spec, learner, batches = setup
    for batch in batches[:2]:
        learner.update(learner.put(batch))
    saver = make_checkpointer(tmp_path)
    counters = {"learner_updates": learner.version, "env_steps": 123, "episodes": 4,
                "recent_returns": [1.0, 2.5]}
    assert saver.save(learner.version, learner.state, counters, mean_return=1.75)
    saved = leaves(learner.state)
    saver.wait()
    saver.close()
    saved_step = learner.version
    # The original goes on; a restored copy must take the very same next step.
    learner.update(learner.put(batches[2]))
    continued = leaves(learner.state)

    restored = checkpoint.restore(str(tmp_path), fns.init)
    assert restored.step == saved_step and restored.skipped == ()
    assert restored.counters == counters
    assert restored.config["run"]["env"] == ENV
    assert jax.dtypes.issubdtype(restored.state.key.dtype, jax.dtypes.prng_key)
    assert_bitwise_equal(leaves(restored.state), saved)

    other = Learner(fns, spec, devices.make_mesh(1), seed=99, unroll_length=T, batch_size=B)
    assert checkpoint.params_digest(other.state.params) != checkpoint.params_digest(restored.state.params)
    other.restore(restored.state, restored.step)
    assert checkpoint.params_digest(other.state.params) == checkpoint.params_digest(restored.state.params)
    other.update(other.put(batches[2]))
    assert other.version == saved_step + 1
    assert_bitwise_equal(leaves(other.state), continued)


def test_keeps_the_newest_and_the_best(setup, tmp_path):
    _, _, learner, _ = setup
    saver = make_checkpointer(tmp_path, keep_checkpoints=2, keep_best=True)
    for step, mean_return in [(1, 10.0), (2, 50.0), (3, 20.0), (4, None), (5, 5.0)]:
        assert saver.save(step, learner.state, {"env_steps": step}, mean_return)
    assert not saver.save(5, learner.state, {}, None)  # a step is saved once
    saver.wait()
    saver.close()
    steps, incomplete = checkpoint.list_checkpoints(str(tmp_path))
    assert steps == [5, 4, 2] and incomplete == []  # the newest two and the best (50.0)


def snapshot(directory):
    """Every file and folder under ``directory`` with its size and modification time."""
    found = {}
    for root, dirs, files in os.walk(directory):
        for name in dirs + files:
            path = os.path.join(root, name)
            st = os.stat(path)
            found[os.path.relpath(path, directory)] = (st.st_size if name in files else -1,
                                                       st.st_mtime_ns)
    return found


def saved_run(tmp_path, learner, steps=(1, 2, 3)):
    run_dir = tmp_path / "run"
    saver = make_checkpointer(run_dir)
    for step in steps:
        saver.save(step, learner.state, {"env_steps": 100 * step}, None)
    saver.wait()
    saver.close()
    return run_dir


def truncate_arrays(step_dir):
    for name in os.listdir(step_dir / "state" / "d"):
        path = step_dir / "state" / "d" / name
        os.truncate(path, os.path.getsize(path) // 2)


def test_corrupt_and_incomplete_newest_fall_back_with_warnings(setup, tmp_path, capsys):
    fns, _, learner, _ = setup
    run_dir = saved_run(tmp_path, learner)
    ckpts = run_dir / "checkpoints"
    truncate_arrays(ckpts / "3")
    (ckpts / "2" / "counters" / "metadata").write_text("{not json")
    # what a process killed mid-write leaves behind
    shutil.copytree(ckpts / "1", ckpts / "4.orbax-checkpoint-tmp-1700000000")
    before = snapshot(run_dir)

    restored = checkpoint.restore(str(run_dir), fns.init)
    assert restored.step == 1 and restored.counters == {"env_steps": 100}
    assert set(restored.skipped) == {"3", "2", "4.orbax-checkpoint-tmp-1700000000"}
    warnings = capsys.readouterr().err.splitlines()
    for name, why in [("3", "corrupt"), ("2", "corrupt"),
                      ("4.orbax-checkpoint-tmp-1700000000", "cut off mid-write")]:
        assert any(f"skipping checkpoint {ckpts / name} ({why}" in w for w in warnings), warnings
    assert snapshot(run_dir) == before  # restoring changes nothing

    # on resume, so new saves cannot collide with them: the unreadable ones are moved aside
    # (kept for inspection), the save cut off mid-write is deleted (it never was whole)
    resume.set_aside(str(run_dir), restored)
    assert checkpoint.list_checkpoints(str(run_dir)) == ([1], [])
    assert sorted(p.split("-")[0] for p in os.listdir(run_dir / "skipped-checkpoints")) == \
        ["2", "3"]
    assert sorted(os.listdir(ckpts)) == ["1"]
    assert any(f"deleted {ckpts / '4.orbax-checkpoint-tmp-1700000000'}" in line
               for line in capsys.readouterr().err.splitlines())


@pytest.mark.parametrize("part,text", [("counters", "1.5"), ("config", "[1, 2]")])
def test_counters_or_config_that_are_not_a_json_object_make_a_checkpoint_corrupt(
        setup, tmp_path, capsys, part, text):
    fns, _, learner, _ = setup
    run_dir = saved_run(tmp_path, learner, steps=(1, 2))
    (run_dir / "checkpoints" / "2" / part / "metadata").write_text(text)
    restored = checkpoint.restore(str(run_dir), fns.init, retries=())
    assert restored.step == 1 and restored.skipped == ("2",)
    kind = "float" if part == "counters" else "list"
    assert (f"skipping checkpoint {run_dir / 'checkpoints' / '2'} (corrupt, ValueError: its "
            f"{part} hold {kind} ") in capsys.readouterr().err


def test_no_complete_checkpoint_is_an_error_and_nothing_changes(setup, tmp_path):
    fns, _, learner, _ = setup
    run_dir = saved_run(tmp_path, learner, steps=(1, 2))
    truncate_arrays(run_dir / "checkpoints" / "2")
    os.rename(run_dir / "checkpoints" / "1", run_dir / "checkpoints" / "1.orbax-checkpoint-tmp-5")
    before = snapshot(run_dir)
    with pytest.raises(checkpoint.CheckpointError) as error:
        checkpoint.restore(str(run_dir), fns.init)
    message = str(error.value)
    assert message.startswith(f"no complete checkpoint in {run_dir / 'checkpoints'}")
    assert "1.orbax-checkpoint-tmp-5: cut off mid-write" in message and "2: corrupt" in message
    assert "\n" not in message
    assert snapshot(run_dir) == before


def test_named_checkpoint(setup, tmp_path):
    fns, _, learner, _ = setup
    run_dir = saved_run(tmp_path, learner)
    assert checkpoint.restore(str(run_dir), fns.init, step=2).counters == {"env_steps": 200}
    with pytest.raises(checkpoint.CheckpointError, match="no checkpoint 7 in"):
        checkpoint.restore(str(run_dir), fns.init, step=7)
    truncate_arrays(run_dir / "checkpoints" / "2")
    with pytest.raises(checkpoint.CheckpointError, match="cannot be read"):
        checkpoint.restore(str(run_dir), fns.init, step=2)
    json.loads((run_dir / "checkpoints" / "2" / "counters" / "metadata").read_text())


def test_saves_fall_due_by_update_count_and_by_time(setup, tmp_path):
    _, _, learner, _ = setup
    run = RunConfig(env=ENV, checkpoint_every_updates=5, checkpoint_every_minutes=None)
    by_updates = checkpointer.Checkpointer(str(tmp_path / "a"), run, {})
    assert [s for s in range(1, 16) if by_updates.due(s)] == [5, 10, 15]
    by_updates.close()

    run = RunConfig(env=ENV, checkpoint_every_minutes=0.005)  # 0.3 s
    by_time = checkpointer.Checkpointer(str(tmp_path / "b"), run, {})
    assert not by_time.due(1)
    time.sleep(0.4)
    assert by_time.due(2)
    by_time.save(2, learner.state, {}, None)
    assert not by_time.due(2) and not by_time.due(3)  # the clock restarts at each save
    by_time.wait()
    by_time.close()


def test_a_transient_read_error_is_retried_before_falling_back(setup, tmp_path, capsys):
    """An array file of the newest checkpoint is missing for a moment (a bucket's or a file
    system's hiccup): the read is tried again and succeeds; without retries it would have
    rolled back to the older checkpoint."""
    import threading
    fns, _, learner, _ = setup
    run_dir = saved_run(tmp_path, learner, steps=(1, 2))
    data = run_dir / "checkpoints" / "2" / "state" / "d"
    hidden = tmp_path / "hidden"
    shutil.move(data, hidden)

    without = checkpoint.restore(str(run_dir), fns.init, retries=())
    assert without.step == 1 and without.skipped == ("2",)

    threading.Timer(0.5, shutil.move, (hidden, data)).start()
    capsys.readouterr()
    restored = checkpoint.restore(str(run_dir), fns.init, retries=(1.0, 1.0))
    assert restored.step == 2 and restored.skipped == ()
    assert "skipping" not in capsys.readouterr().err
    assert checkpoint.params_digest(restored.state.params) == \
        checkpoint.params_digest(learner.state.params)
