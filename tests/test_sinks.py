"""Each metrics row reaches metrics.jsonl, TensorBoard and W&B with the same values."""
import json
import sys
import types

import pytest
from tensorboard.backend.event_processing import event_accumulator

from rltpu import sinks

ROWS = [{"time_s": 1.0, "env_steps": 512, "env_sps": 400.0, "mean_return": None,
         "policy_lag": 0.5, "learner_updates": 2, "loss": 1.25, "actor/idle": 0.1},
        {"time_s": 3.0, "env_steps": 1024, "env_sps": 256.0, "mean_return": 21.5,
         "policy_lag": 1.0, "learner_updates": 4, "loss": 0.75, "actor/idle": 0.2}]


@pytest.fixture
def fake_wandb(monkeypatch):
    """Stands in for the wandb package (not installed in the tests), recording its calls."""
    calls = []

    class Run:
        summary = {}

        def log(self, data, step):
            calls.append(("log", data, step))

        def finish(self):
            calls.append(("finish",))

    module = types.ModuleType("wandb")
    module.init = lambda **kwargs: calls.append(("init", kwargs)) or Run()
    monkeypatch.setitem(sys.modules, "wandb", module)
    return calls, Run


def test_rows_reach_every_sink(tmp_path, fake_wandb, capsys):
    calls, run = fake_wandb
    out = sinks.MetricSinks(str(tmp_path), 2048, {"run": {"seed": 3}}, wandb=True)
    for row in ROWS:
        out.write(row)
    out.close({"final_return": 21.5, "bottleneck": {"verdict": "balanced"}})

    rows = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert rows == ROWS
    acc = event_accumulator.EventAccumulator(str(tmp_path))
    acc.Reload()
    assert [(e.step, e.value) for e in acc.Scalars("loss")] == [(512, 1.25), (1024, 0.75)]
    assert [(e.step, e.value) for e in acc.Scalars("mean_return")] == [(1024, 21.5)]

    assert calls[0][0] == "init" and calls[0][1]["config"] == {"run": {"seed": 3}}
    assert calls[0][1]["name"] == tmp_path.name and calls[0][1]["dir"] == str(tmp_path)
    logged = [c for c in calls if c[0] == "log"]
    assert [step for _, _, step in logged] == [512, 1024]
    assert "mean_return" not in logged[0][1] and logged[1][1]["mean_return"] == 21.5
    assert calls[-1] == ("finish",)
    assert run.summary == {"final_return": 21.5}  # scalars only

    err = capsys.readouterr().err  # pytest's stderr is not a terminal: plain lines
    assert err.count("steps ") == 2 and "/2,048" in err


def test_quiet_prints_nothing(tmp_path, capsys):
    out = sinks.MetricSinks(str(tmp_path), 2048, {}, quiet=True)
    out.write(ROWS[0])
    out.close()
    assert capsys.readouterr().err == ""


def test_missing_wandb_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(sinks.importlib.util, "find_spec", lambda name: None)  # not installed
    with pytest.raises(ValueError, match="--wandb needs the wandb package, which is not "
                                         "installed: pip install wandb"):
        sinks.check_wandb()
