"""rltpu as a package: its version, license, type marker, and the sdist and wheel ``make
dist`` builds (with the built-in agents and envs, which are links in the checkout), installed
into a fresh virtualenv and trained with from a folder outside the checkout."""
import json
import os
import site
import subprocess
import sys
import tarfile
import tomllib
import zipfile

import pytest

import rltpu

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
    PROJECT = tomllib.load(f)["project"]
VERSION = PROJECT["version"]

# Files of each kind that a broken package would lose: a module of the runtime, the linked
# built-in agents and envs (a subpackage two levels down), and the data files.
MUST_HOLD = ["rltpu/__init__.py", "rltpu/cli.py", "rltpu/py.typed",
             "rltpu/agents/__init__.py", "rltpu/agents/impala/losses.py",
             "rltpu/agents/dqn/transitions.py", "rltpu/agents/presets.py",
             "rltpu/envs/make.py", "rltpu/envs/atari.py"]


def test_version_is_pyprojects():
    assert rltpu.__version__ == VERSION
    from rltpu import __version__
    assert __version__ == VERSION


def test_license_and_type_marker():
    with open(os.path.join(ROOT, "LICENSE")) as f:
        text = f.read()
    assert "Apache License" in text and "Version 2.0, January 2004" in text
    assert "Copyright 2026 The rltpu authors" in text
    assert PROJECT["license"] == "Apache-2.0" and PROJECT["license-files"] == ["LICENSE"]
    assert os.path.isfile(os.path.join(ROOT, "rltpu", "py.typed"))


def test_provenance_names_the_versions_and_commit():
    record = rltpu.provenance()
    assert set(record) == {"rltpu", "jax", "jaxlib", "flax", "ray", "python", "platform",
                           "git_commit", "git_dirty"}
    import flax
    import jax
    import jaxlib
    import ray
    assert (record["rltpu"], record["jax"], record["jaxlib"], record["flax"], record["ray"]) == (
        VERSION, jax.__version__, jaxlib.__version__, flax.__version__, ray.__version__)
    assert record["python"] == ".".join(map(str, sys.version_info[:3]))
    head = subprocess.run(["git", "-C", ROOT, "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a git checkout (CI's clone is one)
        assert record["git_commit"] == head.stdout.strip()
        assert isinstance(record["git_dirty"], bool)
    json.dumps(record)  # goes into config.json as it is


@pytest.fixture(scope="module")
def dist(tmp_path_factory):
    """``python -m build`` of this checkout, as ``make dist`` runs it: the sdist, and the
    wheel built from the unpacked sdist."""
    out = tmp_path_factory.mktemp("dist")
    result = subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), ROOT],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    names = sorted(os.listdir(out))
    assert names == [f"rltpu-{VERSION}-py3-none-any.whl", f"rltpu-{VERSION}.tar.gz"], names
    return out / names[0], out / names[1]


def test_sdist_and_wheel_hold_the_agents_and_envs(dist):
    wheel, sdist = dist
    with zipfile.ZipFile(wheel) as z:
        in_wheel = set(z.namelist())
        metadata = z.read(f"rltpu-{VERSION}.dist-info/METADATA").decode()
    assert set(MUST_HOLD) <= in_wheel, set(MUST_HOLD) - in_wheel
    assert f"rltpu-{VERSION}.dist-info/licenses/LICENSE" in in_wheel
    assert "License-Expression: Apache-2.0" in metadata and f"Version: {VERSION}" in metadata
    # Only rltpu: no top-level agents/ or envs/ package beside it.
    assert {n.split("/")[0] for n in in_wheel} == {"rltpu", f"rltpu-{VERSION}.dist-info"}
    with tarfile.open(sdist) as t:
        members = {m.name: m for m in t.getmembers()}
    prefix = f"rltpu-{VERSION}/"
    for name in MUST_HOLD + ["LICENSE", "pyproject.toml", "README.md"]:
        assert prefix + name in members, name
        assert members[prefix + name].isfile(), f"{name} is a link in the sdist"
    # Every module of the checkout's packages is in the wheel.
    checkout = {os.path.relpath(os.path.join(d, f), ROOT)
                for d, _, files in os.walk(os.path.join(ROOT, "rltpu"), followlinks=True)
                for f in files if f.endswith(".py")}
    assert checkout <= in_wheel, checkout - in_wheel


@pytest.mark.slow
def test_wheel_installs_into_a_fresh_virtualenv_and_trains(dist, tmp_path):
    """The wheel (not the checkout) in a new virtualenv trains from a folder outside the
    checkout. Its dependencies come from this interpreter's site-packages (a path, so its
    editable install of rltpu is not in effect): the test is of the wheel, not of PyPI."""
    wheel, _ = dist
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "RAY_ADDRESS")}
    env["RAY_TMPDIR"] = "/tmp"
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, env=env).stdout.strip()
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--quiet",
                    "--no-deps", "--no-index", str(wheel)], check=True, timeout=300, env=env)
    # After the install, so that pip sees only the new virtualenv.
    with open(os.path.join(purelib, "dependencies.pth"), "w") as f:
        f.write("\n".join(site.getsitepackages()) + "\n")
    outside = tmp_path / "elsewhere"
    outside.mkdir()

    def run(*args, timeout=120):
        return subprocess.run(list(args), capture_output=True, text=True, cwd=outside, env=env,
                              timeout=timeout)

    where = run(str(python), "-c", "import importlib.util as u, json, rltpu, "
                "rltpu.agents.impala.losses as l; print(json.dumps([rltpu.__file__, l.__file__, "
                "rltpu.provenance(), [u.find_spec(n) is None for n in ('agents', 'envs')]]))")
    assert where.returncode == 0, where.stderr
    module, losses, record, no_top_level = json.loads(where.stdout)
    assert no_top_level == [True, True]  # rltpu's agents and envs are not importable bare
    assert module.startswith(purelib) and losses.startswith(purelib), (module, losses)
    assert record["rltpu"] == VERSION and record["git_commit"] is None
    version = run(str(venv / "bin" / "rltpu"), "--version")
    assert version.stdout == f"rltpu {VERSION}\n", version.stderr
    trained = run(str(venv / "bin" / "rltpu"), "train", "--total-env-steps", "4096",
                  "--target-return", "none", "--num-actors", "1", "--quiet",
                  "--run-dir", "run", timeout=600)
    assert trained.returncode == 0, trained.stderr[-3000:]
    summary = json.loads(trained.stdout.strip().splitlines()[-1])
    assert summary["env_steps"] >= 4096
    assert os.path.isfile(outside / "run" / "summary.json")
