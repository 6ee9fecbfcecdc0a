"""launch/colab.ipynb: its install cell keeps the runtime's JAX, and the whole notebook,
executed headless on this machine's CPU, finishes with a trained agent and a curve."""
import importlib.metadata
import json
import os
import sys

import nbformat
import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NOTEBOOK = os.path.join(REPO, "launch", "colab.ipynb")


def code_cells():
    return [c for c in nbformat.read(NOTEBOOK, as_version=4).cells if c.cell_type == "code"]


def test_notebook_is_valid_and_has_no_stored_outputs():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbformat.validate(nb)
    assert nb.metadata.kernelspec.name == "python3"
    assert all(not c.outputs and c.execution_count is None for c in code_cells())


def test_install_cell_pins_what_is_installed_and_skips_when_importable(capsys):
    """Run the install cell here: rltpu is importable, so it installs nothing; its pins are
    exactly the installed versions (what keeps pip from upgrading Colab's JAX)."""
    namespace: dict = {}
    exec(compile(code_cells()[0].source, "install-cell", "exec"), namespace)
    assert "rltpu is importable already: nothing to install" in capsys.readouterr().out
    pins = namespace["runtime_pins"]()
    for name in ("jax", "jaxlib", "numpy", "flax", "optax"):
        assert f"{name}=={importlib.metadata.version(name)}" in pins
    assert not any(p.startswith("libtpu") for p in pins)  # not installed here: not pinned
    command = namespace["pip_install_command"]("/content/rltpu", "/tmp/c.txt")
    assert command == [sys.executable, "-m", "pip", "install", "--quiet", "-c", "/tmp/c.txt",
                       "/content/rltpu"]
    assert "-e" not in command  # an editable install needs a restart to import


@pytest.mark.slow
def test_notebook_runs_headless_on_cpu_and_trains(tmp_path, ray_tmpdir, monkeypatch):
    import nbclient

    # The kernel inherits this environment: this checkout first on the path, JAX on the CPU,
    # a fresh local Ray in a short temp dir.
    monkeypatch.setenv("PYTHONPATH", REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    monkeypatch.setenv("JAX_PLATFORMS", "cpu")
    monkeypatch.setenv("RAY_ADDRESS", "")
    monkeypatch.setenv("RAY_TMPDIR", ray_tmpdir)
    monkeypatch.setenv("RLTPU_SOURCE", str(tmp_path / "no-such-checkout"))  # never installs
    nb = nbformat.read(NOTEBOOK, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                     resources={"metadata": {"path": str(tmp_path)}})
    client.execute()

    def text(cell):
        return "".join(o.get("text", "") for o in cell.outputs if o.output_type == "stream")

    cells = [c for c in nb.cells if c.cell_type == "code"]
    assert "nothing to install" in text(cells[0])
    assert f"rltpu from {os.path.join(REPO, 'rltpu')}" in text(cells[0])
    assert "cpu device(s)" in text(cells[1])
    assert any(o.output_type == "display_data" and "image/png" in o.data for o in cells[3].outputs)
    assert "trained: mean return" in text(cells[4])

    (run_dir,) = list((tmp_path / "runs").iterdir())
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["platform"] == "cpu" and summary["agent"] == "ppo"
    assert summary["final_return"] >= 475
    assert summary["peak_rss_mb"] < 12_000  # Colab's free runtime has about 12 GB
    rows = (run_dir / "metrics.jsonl").read_text().splitlines()
    assert len(rows) >= 2
