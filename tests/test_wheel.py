"""The wheel as users install it: rltpu is its only top-level package (the built-in agents
and envs are rltpu.agents and rltpu.envs), and it trains from outside the checkout."""
import glob
import json
import os
import subprocess
import sys
import sysconfig
import zipfile

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> str:
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(out),
                    ROOT], check=True, timeout=600)
    (path,) = glob.glob(str(out / "rltpu-*.whl"))
    return path


def test_wheel_holds_rltpu_alone(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    dist_info = {t for t in top if t.endswith(".dist-info")}
    assert top - dist_info == {"rltpu"}
    (info,) = dist_info
    assert zipfile.ZipFile(wheel).read(f"{info}/top_level.txt").decode().split() == ["rltpu"]
    # The linked folders arrive as real files.
    for path in ("rltpu/agents/impala/losses.py", "rltpu/agents/config.py", "rltpu/envs/make.py",
                 "rltpu/envs/spec.py"):
        assert path in names


@pytest.mark.slow
def test_installed_wheel_trains_outside_the_checkout(wheel, tmp_path, ray_tmpdir):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-index", wheel],
                   check=True, timeout=300)
    # The dependencies: this environment's packages, as a plain path (its .pth files, this
    # checkout's editable install among them, are not read from there).
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    with open(os.path.join(site, "dependencies.pth"), "w") as f:
        f.write(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    env.update(RAY_TMPDIR=ray_tmpdir, HOME=str(tmp_path))
    probe = subprocess.run(
        [python, "-c", "import importlib.util, rltpu, rltpu.agents, rltpu.envs; "
         "print(rltpu.__file__); print(importlib.util.find_spec('agents'), "
         "importlib.util.find_spec('envs'))"],
        cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert probe.returncode == 0, probe.stderr
    where, top_level = probe.stdout.splitlines()
    assert where.startswith(str(venv)), where
    assert top_level == "None None"
    run_dir = work / "run"
    proc = subprocess.run(
        [str(venv / "bin" / "rltpu"), "train", "--total-env-steps", "4000", "--target-return",
         "none", "--run-dir", str(run_dir), "--quiet", "--compilation-cache", "none"],
        cwd=work, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["env_steps"] >= 4000 and summary["agent"] == "impala"
