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
