"""The live console: a bar redrawn in place on a terminal, plain lines elsewhere."""
import io
import math

from rltpu import progress

ROW = {"time_s": 12.0, "env_steps": 25_000, "env_sps": 5_000.0, "mean_return": 87.25,
       "policy_lag": 1.5, "learner_updates": 40}


class Terminal(io.StringIO):
    def isatty(self):
        return True


def test_eta_and_durations():
    assert progress.eta(25_000, 100_000, 5_000.0) == 15.0
    assert progress.eta(120_000, 100_000, 5_000.0) == 0.0
    assert math.isinf(progress.eta(0, 100, 0.0))
    assert progress.format_duration(15) == "00:15"
    assert progress.format_duration(3725) == "1:02:05"
    assert progress.format_duration(math.inf) == "--:--"


def test_terminal_gets_one_line_redrawn(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    out = Terminal()
    bar = progress.Progress(100_000, stream=out)
    assert bar.live
    bar.update(ROW)
    bar.update({**ROW, "env_steps": 50_000, "mean_return": None})
    bar.close()
    text = out.getvalue()
    assert text.count("\r") == 2 and text.endswith("\n") and text.count("\n") == 1
    first = text.split("\r")[1]
    assert first.startswith("[######..................]  25% 25,000/100,000 steps")
    assert "5,000 steps/s" in first and "return 87.2" in first and "lag 1.5" in first
    assert "left 00:15" in first
    assert "return -" in text.split("\r")[2] and "left 00:10" in text.split("\r")[2]


def test_a_log_file_gets_plain_lines():
    out = io.StringIO()
    bar = progress.Progress(100_000, stream=out)
    assert not bar.live
    bar.update(ROW)
    bar.update(ROW)
    bar.close()
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and "\r" not in out.getvalue() and "\x1b" not in out.getvalue()
    assert lines[0] == ("[   12.0s] steps     25,000/100,000  sps    5,000  return    87.2"
                        "  lag  1.5  updates 40  left 00:15")


def test_quiet_writes_nothing():
    out = Terminal()
    bar = progress.Progress(100_000, stream=out, quiet=True)
    bar.update(ROW)
    bar.close()
    assert out.getvalue() == ""


def test_a_narrow_terminal_gets_a_line_that_fits(monkeypatch):
    monkeypatch.setenv("COLUMNS", "40")
    out = Terminal()
    progress.Progress(100_000, stream=out).update(ROW)
    assert len(out.getvalue()) == len("\r") + 39 + len("\x1b[K")


def test_a_notebook_gets_a_tqdm_bar_updated_in_place():
    """tqdm.auto outside a kernel is tqdm's text bar: each row redraws it after a \\r."""
    out = io.StringIO()
    bar = progress.Progress(100_000, stream=out, notebook=True)
    assert bar.notebook and not bar.live
    bar.update(ROW)
    bar.update({**ROW, "env_steps": 50_000, "mean_return": None})
    bar.update({**ROW, "env_steps": 120_000})  # the last update overshoots the budget
    bar.close()
    text = out.getvalue()
    draws = [d for d in text.split("\r") if d.strip()]
    assert "\n" not in text.rstrip("\n") and text.endswith("\n")  # one line, redrawn
    assert draws[0].startswith("  0%|")  # drawn when made
    assert draws[1].startswith(" 25%|") and "25.0k/100k" in draws[1]
    assert draws[1].rstrip().endswith("return 87.2  lag 1.5  updates 40]")
    assert any(d.startswith(" 50%|") and "return -  lag 1.5" in d for d in draws)
    assert draws[-1].startswith("100%|") and "100k/100k" in draws[-1]


def test_outside_a_kernel_stderr_is_no_notebook():
    assert not progress.in_jupyter_kernel()
    assert not progress.Progress(100).notebook


def test_in_a_jupyter_kernel_progress_is_a_bar_ray_stays_up_and_runs_count_from_their_call(
        tmp_path):
    """A real IPython kernel (as Colab's): stderr there is no terminal, and the default
    progress is the tqdm bar; a Ray a run started is kept for the next run; a run's clock
    starts at its call, not at the kernel's start (the kernel is seconds old by then)."""
    import nbclient
    import nbformat

    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(
        "import time\n"
        "time.sleep(2)  # the kernel's process is older than the run\n"
        "from rltpu import cluster, metrics, progress\n"
        "print(progress.in_jupyter_kernel(), progress.Progress(100).notebook, "
        "progress.Progress(100).live, cluster.keep_ray_up(), "
        "abs(metrics.run_start_time() - time.time()) < 1.0)")])
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    stdout = [o["text"] for o in nb.cells[0].outputs if o.get("name") == "stdout"]
    assert stdout == ["True True False True True\n"]


def test_outside_a_kernel_a_processs_first_run_counts_from_its_start(monkeypatch):
    """The CLI's run (a process's first) counts its imports; a later run in the same
    process counts from its own start."""
    import time

    from rltpu import cluster, metrics
    assert not cluster.keep_ray_up()
    monkeypatch.setattr(metrics, "_ran_before", False)
    assert metrics.run_start_time() == metrics.process_start_time()
    assert abs(metrics.run_start_time() - time.time()) < 0.5
