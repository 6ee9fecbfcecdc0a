"""launch/colab.ipynb from a clean runtime: its install cell names its source in one variable
and keeps the runtime's JAX; and the whole notebook, given only a wheel of this checkout,
installs it into a fresh virtualenv whose other packages are the Colab compatibility
lane's (constraints-colab.txt), then runs headless on this machine's CPU."""
import importlib.metadata
import json
import os
import site
import subprocess
import sys

import nbformat
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, "launch", "colab.ipynb")
PLACEHOLDER = 'RLTPU_SOURCE = "git+https://github.com/OWNER/rltpu"'
with open(os.path.join(REPO, "constraints-colab.txt")) as _f:
    COLAB_PINS = dict(line.split("==") for line in _f.read().split("\n")
                      if line and not line.startswith("#"))
# The compatibility lane (make test-compat) has exactly what a Colab TPU runtime
# preinstalls; the notebook's end-to-end test runs there.
IN_COMPAT_LANE = all(importlib.metadata.version(name) == version
                     for name, version in COLAB_PINS.items())


def code_cells(nb=None):
    nb = nbformat.read(NOTEBOOK, as_version=4) if nb is None else nb
    return [c for c in nb.cells if c.cell_type == "code"]


def install_cell_namespace() -> dict:
    """The install cell run here, where rltpu is importable: it installs nothing."""
    namespace: dict = {}
    exec(compile(code_cells()[0].source, "install-cell", "exec"), namespace)
    return namespace


def test_notebook_is_valid_and_has_no_stored_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    assert all(not c.outputs and c.execution_count is None for c in code_cells(nb))


def test_install_cell_pins_what_is_installed_and_skips_when_importable(capsys):
    """Its pins are exactly the installed versions (what keeps pip from upgrading Colab's
    JAX); rltpu is importable here, so it installs nothing."""
    namespace = install_cell_namespace()
    assert "rltpu is importable already: nothing to install" in capsys.readouterr().out
    pins = namespace["runtime_pins"]()
    for name in ("jax", "jaxlib", "numpy", "flax", "optax"):
        assert f"{name}=={importlib.metadata.version(name)}" in pins
    assert not any(p.startswith("libtpu") for p in pins)  # not installed here: not pinned
    command = namespace["pip_install_command"]("git+https://example.org/rltpu", "/tmp/c.txt")
    assert command == [sys.executable, "-m", "pip", "install", "--quiet", "-c", "/tmp/c.txt",
                       "rltpu[jax-envs,video] @ git+https://example.org/rltpu"]
    assert "-e" not in command  # an editable install needs a restart to import


def test_install_cell_takes_its_source_from_one_variable_at_the_top(tmp_path):
    """RLTPU_SOURCE, the cell's first statement, is a placeholder the user must edit (a
    clear error until then), or a git URL, a wheel or a checkout."""
    source = code_cells()[0].source
    first_statement = next(line for line in source.splitlines()
                           if line.strip() and not line.startswith("#"))
    assert first_statement == PLACEHOLDER and source.count("RLTPU_SOURCE =") == 1
    requirement = install_cell_namespace()["requirement"]
    with pytest.raises(ValueError, match="RLTPU_SOURCE is the placeholder .* edit the first line"):
        requirement("git+https://github.com/OWNER/rltpu")
    assert (requirement("git+https://github.com/me/rltpu@v0.2") ==
            "rltpu[jax-envs,video] @ git+https://github.com/me/rltpu@v0.2")
    wheel = tmp_path / "rltpu-0.2.0-py3-none-any.whl"
    wheel.write_bytes(b"")
    assert requirement(str(wheel)) == f"rltpu[jax-envs,video] @ file://{wheel}"
    assert requirement(REPO) == f"rltpu[jax-envs,video] @ file://{REPO}"
    with pytest.raises(FileNotFoundError, match="'/content/rltpu' is neither a wheel"):
        requirement("/content/rltpu")
    with pytest.raises(FileNotFoundError, match="neither a wheel"):
        requirement(str(tmp_path))  # a folder, but no checkout


RUN_NOTEBOOK = """
import sys, nbclient, nbformat
nb = nbformat.read(sys.argv[1], as_version=4)
client = nbclient.NotebookClient(nb, timeout=1500, kernel_name="python3",
                                 resources={"metadata": {"path": sys.argv[3]}})
try:
    client.execute()
finally:
    nbformat.write(nb, sys.argv[2])
"""


@pytest.fixture
def wheel(tmp_path_factory):
    """A wheel of this checkout, built as ``make dist`` builds one (``python -m build``)."""
    out = tmp_path_factory.mktemp("wheel")
    result = subprocess.run([sys.executable, "-m", "build", "--wheel", "--outdir", str(out), REPO],
                            capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    (name,) = os.listdir(out)
    return out / name


@pytest.mark.slow
@pytest.mark.timeout(2400)
@pytest.mark.skipif(not IN_COMPAT_LANE, reason="needs the Colab compatibility lane's packages "
                    f"({', '.join(f'{k}=={v}' for k, v in COLAB_PINS.items())}): make test-compat")
def test_notebook_installs_its_wheel_in_a_fresh_virtualenv_and_runs(wheel, tmp_path, ray_tmpdir):
    """The notebook as a user runs it: RLTPU_SOURCE edited to name a wheel of this checkout,
    executed by a kernel of a new virtualenv that has no rltpu. Its install cell pip-installs
    the wheel with the jax-envs and video extras, pinned to the installed JAX; every other
    package comes from this lane's site-packages (a path in the virtualenv: the lane's own
    editable rltpu is not in effect) and pip may not download anything (PIP_NO_INDEX), so
    an extra or a dependency this lane lacks fails here. Then it trains in both modes
    with progress bars, draws the curves and shows a video."""
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = str(venv / "bin" / "python")
    # As a Colab CPU runtime: one JAX device (no XLA_FLAGS for more), no Ray yet.
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "RAY_ADDRESS", "XLA_FLAGS")}
    env.update(JAX_PLATFORMS="cpu", RAY_TMPDIR=ray_tmpdir, PIP_NO_INDEX="1",
               PIP_DISABLE_PIP_VERSION_CHECK="1")
    # On a loaded machine Ray's GCS may take longer than its default 30 s to start.
    env.setdefault("RAY_gcs_server_port_wait_time_s", "300")
    purelib = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True, env=env).stdout.strip()
    with open(os.path.join(purelib, "lane.pth"), "w") as f:
        f.write("\n".join(site.getsitepackages()) + "\n")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    install = code_cells(nb)[0]
    assert PLACEHOLDER in install.source
    install.source = install.source.replace(PLACEHOLDER, f"RLTPU_SOURCE = {str(wheel)!r}")
    given, executed, work = tmp_path / "given.ipynb", tmp_path / "executed.ipynb", tmp_path / "work"
    nbformat.write(nb, str(given))
    work.mkdir()
    result = subprocess.run([python, "-c", RUN_NOTEBOOK, str(given), str(executed), str(work)],
                            capture_output=True, text=True, env=env, cwd=work, timeout=2300)
    nb = nbformat.read(str(executed), as_version=4)
    cells = code_cells(nb)

    def stream(cell, name="stdout"):
        return "".join(o.get("text", "") for o in cell.outputs
                       if o.output_type == "stream" and o.name == name)

    errors = [o for c in cells for o in c.outputs if o.output_type == "error"]
    assert result.returncode == 0 and not errors, (result.stderr[-3000:], errors)
    install_out = stream(cells[0])
    assert "installing rltpu[jax-envs,video] @ file://" in install_out
    assert f"keeping jax=={COLAB_PINS['jax']}, jaxlib=={COLAB_PINS['jaxlib']}" in install_out
    assert f"from {os.path.join(purelib, 'rltpu')}\n" in install_out  # the wheel, not the lane's
    assert f"JAX {COLAB_PINS['jax']}: 1 cpu device(s)" in stream(cells[1])

    # Progress in the kernel: one tqdm bar redrawn in place (\r), not a line per row.
    anakin_progress = stream(cells[2], "stderr")
    assert "step/s" in anakin_progress and "\r" in anakin_progress
    assert "steps " not in anakin_progress and "updates " in anakin_progress
    assert "Anakin: mean return" in stream(cells[2])
    ray_progress = stream(cells[3], "stderr")
    assert "step/s" in ray_progress
    # Ray's start-up says nothing about an opt-out of token authentication (rltpu refuses it).
    assert "Token authentication" not in ray_progress

    summaries = {}
    for run_dir in sorted((work / "runs").iterdir()):
        summaries[run_dir.name.rsplit("-", 2)[0]] = json.loads((run_dir / "summary.json").read_text())
    anakin, ray_run, again = summaries["anakin-ppo"], summaries["ray-ppo"], summaries["ray-ppo-again"]
    assert (anakin["mode"], anakin["platform"], anakin["agent"]) == ("anakin", "cpu", "ppo")
    assert anakin["final_return"] >= 475
    assert ray_run["mode"] == "ray" and again["mode"] == "ray"
    assert ray_run["env_steps"] >= 300_000 or ray_run["final_return"] >= 475
    assert max(s["peak_rss_mb"] for s in summaries.values()) < 12_000  # Colab's free: ~12 GB
    # The second run found Ray up: it connected at once (counted from its own call).
    assert again["startup_phases_s"]["ray"] < 1.0
    # and, with the same settings but its seed, it reused the first run's actors and compiled
    # programs (rltpu.session): 0.13 s measured at load 33, where new actors take 8 s or more
    assert again["startup_phases_s"]["first_batch"] < 3.0, again["startup_phases_s"]
    assert f"first batch at {again['startup_phases_s']['first_batch']:.2f} s" in stream(cells[4])
    print("first batch of the second Ray run:", json.dumps(again["startup_phases_s"]),
          "(first run:", json.dumps(ray_run["startup_phases_s"]) + ")")

    assert any(o.output_type == "display_data" and "image/png" in o.data for o in cells[5].outputs)
    (video,) = [o for o in cells[6].outputs if o.output_type == "display_data"]
    assert '<video controls autoplay loop' in video.data["text/html"]
    assert "data:video/mp4;base64," in video.data["text/html"]  # embedded: no file to serve
    assert "greedy episode: return" in stream(cells[6])
    assert "anakin: trained: mean return" in stream(cells[7])
