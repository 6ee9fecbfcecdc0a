"""SIGTERM at any moment of a Ray-mode run, to rltpu alone or to its whole process group
(as a preempted VM's shutdown sends it, Ray's processes included): a committed final
checkpoint and exit status 0 within the grace a Cloud TPU spot VM gives (30 s)."""
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from rltpu import agents, checkpoint, envs
from rltpu.faults import StopRequest, rollout_actor_processes

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
GRACE_S = 30  # what Cloud TPU spot VMs give between SIGTERM and power-off


def start(args, tmp_path, ray_dir):
    """``rltpu train`` in a session (process group) of its own, Ray's processes in it."""
    log = open(tmp_path / "train.log", "w")
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_TMPDIR": ray_dir,
           "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "rltpu.cli", "train", *map(str, args)],
                            env=env, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path,
                            start_new_session=True)


def wait_for(condition, proc, tmp_path, what, timeout=400):
    deadline = time.time() + timeout
    while not condition():
        assert proc.poll() is None, f"exited before {what}: " + \
            (tmp_path / "train.log").read_text()[-3000:]
        assert time.time() < deadline, f"timed out waiting for {what}"
        time.sleep(0.2)


def signal_and_wait(proc, tmp_path, group: bool) -> float:
    """Sends SIGTERM (to the group or the process); returns the seconds until it exited 0."""
    t0 = time.time()
    if group:
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        proc.send_signal(signal.SIGTERM)
    try:
        code = proc.wait(timeout=GRACE_S + 30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        raise AssertionError("still running 60 s after SIGTERM: "
                             + (tmp_path / "train.log").read_text()[-3000:])
    took = time.time() - t0
    assert code == 0, (tmp_path / "train.log").read_text()[-3000:]
    summary = tmp_path / "run" / "summary.json"
    if summary.exists():  # written right after the final checkpoint was committed
        print(f"summary.json {os.path.getmtime(summary) - t0:.1f} s after SIGTERM")
    return took


def check_final(run_dir, tmp_path, took):
    output = (tmp_path / "train.log").read_text()
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["stopped_by"] == "SIGTERM"
    final = summary["learner_updates"]
    assert (f"rltpu: stopped by SIGTERM after update {final:,}; checkpoint "
            f"{run_dir / 'checkpoints' / str(final)} is complete.") in output, output[-3000:]
    assert checkpoint.list_checkpoints(str(run_dir)) [0][0] == final
    agent = agents.get("impala")
    env = summary["env"]
    restored = checkpoint.restore(str(run_dir), agent.build(envs.make_spec(env),
                                                            agent.Config()).init)
    assert restored.step == final and restored.counters["env_steps"] == summary["env_steps"]
    assert took < GRACE_S, f"took {took:.1f} s"
    print(f"exit 0 {took:.1f} s after SIGTERM, checkpoint {final}")
    return summary


def ray_like_start(swallow: bool):
    """What ``ray.init`` does with a SIGTERM that lands in it: its handler exits, and
    (``swallow``) its C++ wait turns the ``SystemExit`` into an error a retry swallows."""
    def start():
        signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(signum))
        try:
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.1)  # (the handler runs here)
        except SystemExit:
            if not swallow:
                raise
        return True
    return start


@pytest.mark.jax_independent
@pytest.mark.parametrize("swallow", [False, True], ids=["exits", "swallowed"])
def test_a_sigterm_while_ray_starts_is_a_stop_request(swallow):
    with StopRequest() as stop:
        started = stop.during_ray_init(ray_like_start(swallow))
        assert stop.signal_name == "SIGTERM" and started is swallow
        assert signal.getsignal(signal.SIGTERM) == stop._handle  # ours again
    assert signal.set_wakeup_fd(-1) == -1  # counting ended


@pytest.mark.jax_independent
def test_ray_start_without_a_signal_is_no_stop_and_leaves_a_wakeup_fd_alone():
    with StopRequest() as stop:
        assert stop.during_ray_init(lambda: True) and not stop.requested
        read, write = os.pipe()
        os.set_blocking(write, False)
        signal.set_wakeup_fd(write)  # an asyncio loop's, say
        try:
            assert stop.during_ray_init(lambda: True) and not stop.requested
            assert signal.set_wakeup_fd(write) == write
        finally:
            signal.set_wakeup_fd(-1)
            os.close(read)
            os.close(write)


# ``ray.init`` in a session of its own; the SIGTERM goes to the whole group from an
# after-fork hook, the first time Ray forks once its GCS runs (with SIGTERM not blocked, as
# it is while the GCS and the raylet start): as a signal to every process lands at any
# instruction, here at one where Python drops the handler's exception.
SIGNAL_IN_A_FORK_HOOK = """
import json, os, signal, sys, time
import psutil
from rltpu import cluster
from rltpu.faults import StopRequest

sent = []
def signal_the_group():
    children = [child.name() for child in psutil.Process().children()]
    masked = signal.SIGTERM in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    if not sent and "gcs_server" in children and not masked:
        sent.append(time.time())
        os.killpg(0, signal.SIGTERM)
os.register_at_fork(after_in_parent=signal_the_group)
with StopRequest() as stop:
    started = stop.during_ray_init(lambda: cluster.connect(1))
    took = time.time() - sent[0]
    gcs = [child for child in psutil.Process().children() if child.name() == "gcs_server"]
    print(json.dumps({"started": started, "stopped_by": stop.signal_name, "seconds": took,
                      "gcs_alive": [child.status() != psutil.STATUS_ZOMBIE for child in gcs]}))
cluster.shutdown()
"""


def test_a_sigterm_to_the_group_ends_ray_init_where_its_exit_is_dropped(ray_tmpdir, request):
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_TMPDIR": ray_tmpdir,
           "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = request.node.proc = subprocess.Popen(
        [sys.executable, "-c", SIGNAL_IN_A_FORK_HOOK], env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err[-3000:]
    # Ray's exit was dropped (the hook's exception). Before, ray.init went on and, the
    # signal having ended the GCS, waited for it (30 s for its port file or for the node;
    # 60 s in a GCS client, which then ended the process with status 1) and failed ("Ray
    # failed to start after SIGTERM").
    assert "Exception ignored" in err and "SystemExit: 15" in err, err[-3000:]
    assert "SIGTERM received while Ray was starting: stopping" in err, err[-3000:]
    result = json.loads(out.splitlines()[-1])
    assert result["started"] is False and result["stopped_by"] == "SIGTERM", result
    assert result["seconds"] < 10, result
    # The GCS took the signal blocked (cluster.ray_outlives_sigterm): nothing in ray.init
    # can be left waiting for it.
    assert result["gcs_alive"] == [True], result


@pytest.fixture(autouse=True)
def end_strays(request):
    yield
    proc = getattr(request.node, "proc", None)
    if proc is not None and proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.parametrize("group", [False, True], ids=["rltpu", "group"])
def test_sigterm_while_actors_never_answer(group, tmp_path, ray_dir, request):
    """The actors' envs hang: the run waits for its first batch until the signal."""
    run_dir = tmp_path / "run"
    proc = request.node.proc = start(
        ["--run-dir", run_dir, "--env", "rltpu.envs.fake:HangingEnv", "--num-actors", 2,
         "--quiet"], tmp_path, ray_dir)
    wait_for(lambda: len(rollout_actor_processes(proc.pid)) == 2, proc, tmp_path,
             "the actors")
    time.sleep(5)  # the actors are stuck in their first step
    summary = check_final(run_dir, tmp_path, signal_and_wait(proc, tmp_path, group))
    assert summary["learner_updates"] == 0 and summary["env_steps"] == 0


@pytest.mark.slow
@pytest.mark.parametrize("group", [False, True], ids=["rltpu", "group"])
def test_sigterm_during_start(group, tmp_path, ray_dir, request):
    """As soon as the run directory exists: Ray is starting and the learner compiling."""
    run_dir = tmp_path / "run"
    proc = request.node.proc = start(["--run-dir", run_dir, "--quiet"], tmp_path, ray_dir)
    wait_for(lambda: (run_dir / "config.json").exists(), proc, tmp_path, "the run directory",
             timeout=200)
    check_final(run_dir, tmp_path, signal_and_wait(proc, tmp_path, group))


@pytest.mark.slow
def test_sigterm_to_the_group_mid_run(tmp_path, ray_dir, request):
    """Mid-training, to every process of the run: Ray's die too, the learner's state is
    saved without them."""
    run_dir = tmp_path / "run"
    proc = request.node.proc = start(
        ["--run-dir", run_dir, "--target-return", "none", "--total-env-steps", 50_000_000,
         "--checkpoint-every-minutes", "none", "--log-every-s", 0.5, "--quiet"],
        tmp_path, ray_dir)
    metrics = run_dir / "metrics.jsonl"
    wait_for(lambda: metrics.exists() and len(metrics.read_text().splitlines()) >= 3, proc,
             tmp_path, "training")
    summary = check_final(run_dir, tmp_path, signal_and_wait(proc, tmp_path, group=True))
    assert summary["learner_updates"] > 0
