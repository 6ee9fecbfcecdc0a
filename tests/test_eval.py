"""``rltpu eval``: greedy episodes from a real checkpoint, checked against playing them here;
``--video`` MP4s read back with a decoder: a frame per step (give or take the last) and a
drawn first frame."""
import dataclasses
import json
import os
import subprocess
import sys

import gymnasium as gym
import jax
import numpy as np
import pytest

from rltpu import agents
from rltpu import envs
from rltpu import checkpoint, checkpointer, devices
from rltpu.config import RunConfig
from rltpu.learner import Learner

IMPALA = agents.get("impala")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SEED = 7


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A CartPole run with two checkpoints holding different params."""
    run_dir = tmp_path_factory.mktemp("eval") / "run"
    run = RunConfig(run_dir=str(run_dir))
    config = {"run": dataclasses.asdict(run), "agent": dataclasses.asdict(IMPALA.Config())}
    os.makedirs(run_dir)
    (run_dir / "config.json").write_text(json.dumps(config))
    spec = envs.make_spec("CartPole-v1")
    saver = checkpointer.Checkpointer(str(run_dir), run, config)
    for step, seed in [(10, 1), (20, 2)]:
        learner = Learner(IMPALA.build(spec, IMPALA.Config()), spec, devices.make_mesh(1), seed,
                          run.unroll_length, run.batch_size)
        saver.save(step, learner.state, {"env_steps": step}, None)
    saver.wait()
    saver.close()
    return run_dir


def play_greedy(run_dir, step, episodes):
    """The reference: argmax of the checkpoint's policy logits, episode i reset with SEED + i."""
    spec = envs.make_spec("CartPole-v1")
    fns = IMPALA.build(spec, IMPALA.Config())
    params = checkpoint.restore(str(run_dir), fns.init, step).state.params
    greedy = jax.jit(fns.greedy_step)
    env = gym.make("CartPole-v1")
    lengths = []
    for i in range(episodes):
        obs, _ = env.reset(seed=SEED + i)
        done, length = False, 0
        while not done:
            action = greedy(params, obs[None], jax.random.key(0)).action
            obs, _, terminated, truncated, _ = env.step(int(action[0]))
            done, length = terminated or truncated, length + 1
        lengths.append(length)
    return lengths


def rltpu_eval(*args, tmp_path):
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-m", "rltpu.cli", "eval", *map(str, args)],
                          env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)


@pytest.mark.parametrize("step", [None, 10])
def test_eval_reports_the_mean_greedy_return(run_dir, step, tmp_path):
    flags = [] if step is None else ["--checkpoint", step]
    result = rltpu_eval(run_dir, "--episodes", 3, "--seed", SEED, *flags, tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    expected_step = 20 if step is None else step
    lengths = play_greedy(run_dir, expected_step, 3)
    assert report["checkpoint"] == expected_step and report["episodes"] == 3
    assert report["returns"] == [float(n) for n in lengths]  # CartPole: reward 1 per step
    assert report["mean_return"] == pytest.approx(np.mean(lengths))
    assert report["videos"] == [] and not (run_dir / "videos").exists()


def test_eval_video_has_a_frame_per_step(run_dir, tmp_path):
    pytest.importorskip("moviepy")
    iio = pytest.importorskip("imageio.v3")
    result = rltpu_eval(run_dir, "--episodes", 2, "--seed", SEED, "--video", tmp_path=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout)
    folders = sorted((run_dir / "videos").iterdir())
    assert len(folders) == 1 and folders[0].name.endswith("-checkpoint-20")
    assert report["videos"] == [str(folders[0] / f"eval-episode-{i}.mp4") for i in range(2)]
    # a second evaluation writes a folder of its own; the first one's videos stay
    again = rltpu_eval(run_dir, "--episodes", 1, "--seed", SEED, "--video", tmp_path=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    second = json.loads(again.stdout)["videos"]
    assert len(second) == 1 and os.path.dirname(second[0]) != str(folders[0])
    assert len(list((run_dir / "videos").iterdir())) == 2
    assert all(os.path.exists(p) for p in report["videos"] + second)
    for path, length in zip(report["videos"], report["lengths"]):
        frames = list(iio.imiter(path))
        # the reset frame and one per step; moviepy's encoder can drop the last frame when
        # the clip's duration rounds down at 50 fps
        assert len(frames) in (length, length + 1), (len(frames), length)
        assert frames[0].shape == (400, 600, 3) and frames[0].std() > 0  # a drawn cart


@pytest.mark.parametrize("args,message", [
    (["--episodes", "0"], "argument --episodes: must be a positive integer, got 0"),
    (["--checkpoint", "15"], "no checkpoint 15 in {run}/checkpoints; complete ones look like: 10, 20"),
    (["--checkpoint", "ten"], "argument --checkpoint: invalid int value: 'ten'"),
])
def test_eval_bad_input_is_one_line_and_exit_2(run_dir, args, message, tmp_path):
    result = rltpu_eval(run_dir, *args, tmp_path=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == "rltpu: error: " + message.format(run=run_dir)
