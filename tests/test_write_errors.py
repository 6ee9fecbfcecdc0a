"""A full disk mid-run (a real one: a small tmpfs, filled while training writes to it): one
line naming the failed write and the last good checkpoint, exit status 1; that checkpoint
stays whole and the run resumes from it once there is room, leftovers cleaned up."""
import errno
import os
import signal
import subprocess
import sys
import time

import pytest

from rltpu import agents, checkpoint, envs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture
def small_disk(tmp_path):
    """A 16 MB tmpfs (needs root; skipped where it cannot be mounted)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if made.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {made.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def fill(folder) -> None:
    """Writes zeros until the file system is full. It may be full already (CI saw the
    filler's own creation refused with ENOSPC): that is the state wanted, not an error."""
    try:
        with open(folder / "filler", "wb") as f:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
    except OSError as e:
        if e.errno != errno.ENOSPC:
            raise


def usage(folder) -> str:
    """df and du of the small disk, for a failure's message."""
    return "".join(subprocess.run(command + [str(folder)], capture_output=True,
                                  text=True).stdout for command in (["df", "-k"], ["du", "-k"]))


@pytest.mark.slow
def test_full_disk_is_one_line_and_the_last_checkpoint_survives(small_disk, tmp_path, ray_dir):
    run_dir = small_disk / "run"
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_TMPDIR": ray_dir,
           "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with open(tmp_path / "train.log", "w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rltpu.cli", "train", "--run-dir", str(run_dir),
             "--checkpoint-every-updates", "5", "--target-return", "none",
             "--total-env-steps", "50000000", "--log-every-s", "0.2", "--quiet"],
            env=env, stdout=subprocess.DEVNULL, stderr=log, cwd=tmp_path,
            start_new_session=True)
    try:
        deadline = time.time() + 400
        while len(checkpoint.list_checkpoints(str(run_dir))[0]) < 2:
            assert proc.poll() is None, (tmp_path / "train.log").read_text()[-3000:]
            assert time.time() < deadline
            time.sleep(0.2)
        fill(small_disk)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    output = (tmp_path / "train.log").read_text()
    assert code == 1, output[-3000:] + usage(small_disk)
    errors = [line for line in output.splitlines() if line.startswith("rltpu: error:")]
    assert len(errors) == 1 and "Traceback" not in output, output[-3000:]
    steps, _ = checkpoint.list_checkpoints(str(run_dir))
    assert errors[0].startswith("rltpu: error: cannot write ")
    assert "No space left on device" in errors[0]
    assert errors[0].endswith(f"; the last good checkpoint is {run_dir}/checkpoints/{steps[0]}")
    agent = agents.get("impala")
    init = agent.build(envs.make_spec("CartPole-v1"), agent.Config()).init
    assert checkpoint.restore(str(run_dir), init, retries=()).step == steps[0]
    print(errors[0])

    (small_disk / "filler").unlink(missing_ok=True)
    resumed = subprocess.run(
        [sys.executable, "-m", "rltpu.cli", "train", "--resume", str(run_dir), "--quiet",
         "--total-env-steps", "1"], env=env, capture_output=True, text=True, timeout=600,
        cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:] + usage(small_disk)
    assert f"resumed from {run_dir}/checkpoints/{steps[0]} " in resumed.stderr
    after, incomplete = checkpoint.list_checkpoints(str(run_dir))
    assert incomplete == [] and after[0] > steps[0]
    assert not [n for n in os.listdir(run_dir / "checkpoints") if "tmp" in n]
