"""Each metrics row reaches metrics.jsonl, TensorBoard and W&B with the same values."""
import glob
import json
import os
import struct

import pytest
from tensorboard.backend.event_processing import event_accumulator

from rltpu import sinks

ROWS = [{"time_s": 1.0, "env_steps": 512, "env_sps": 400.0, "mean_return": None,
         "policy_lag": 0.5, "learner_updates": 2, "loss": 1.25, "actor/idle": 0.1},
        {"time_s": 3.0, "env_steps": 1024, "env_sps": 256.0, "mean_return": 21.5,
         "policy_lag": 1.0, "learner_updates": 4, "loss": 0.75, "actor/idle": 0.2}]


def wandb_records(run_dir):
    """The records of the one offline W&B run under ``run_dir``, read back from its
    transaction log (``run-ID.wandb``: a LevelDB-style log of ``Record`` protos; wandb
    0.31 has no Python reader for it, so this is one)."""
    from wandb.proto import wandb_internal_pb2
    [path] = glob.glob(os.path.join(run_dir, "wandb", "offline-run-*", "run-*.wandb"))
    data = open(path, "rb").read()
    assert struct.unpack("<4sHB", data[:7]) == (b":W&B", 0xBEE1, 0)  # its header
    block, offset, pending, records = 32768, 7, b"", []
    while offset + 7 <= len(data):
        if block - offset % block < 7:  # a block's tail too short for a header is padding
            offset += block - offset % block
            continue
        _, length, kind = struct.unpack("<IHB", data[offset:offset + 7])  # crc, length, type
        pending += data[offset + 7:offset + 7 + length]
        offset += 7 + length
        if kind in (1, 4):  # a whole record, or the last piece of one
            records.append(wandb_internal_pb2.Record.FromString(pending))
            pending = b""
    return records


def items(updates):
    """{key: value} of a history row's or summary's items."""
    return {item.key or "/".join(item.nested_key): json.loads(item.value_json) for item in updates}


@pytest.fixture
def wandb_offline(monkeypatch):
    """The real wandb package (yielded) in offline mode (no network: the run stays in its
    folder), silent (its console lines would mix with the progress lines checked below);
    afterwards the wandb-core service process it started is ended."""
    import wandb
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_PROJECT", raising=False)
    yield wandb
    wandb.teardown()


def test_rows_reach_every_sink(tmp_path, wandb_offline, capsys):
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

    # wandb's service process writes the run's log out when it ends (at the latest when this
    # process exits, as a run's does): end it now to read the log.
    wandb_offline.teardown()
    records = wandb_records(str(tmp_path))
    [run] = [r.run for r in records if r.HasField("run")]
    assert run.project == "rltpu" and run.display_name == tmp_path.name
    assert items(run.config.update)["run"] == {"seed": 3}
    history = [items(r.history.item) for r in records if r.HasField("history")]
    assert [h["_step"] for h in history] == [512, 1024]  # one row per metrics row, at env_steps
    for logged, row in zip(history, ROWS):
        assert {k: v for k, v in logged.items() if not k.startswith("_")} == {
            k: v for k, v in row.items() if v is not None}  # (None: not logged)
    summary = {}
    for r in records:
        if r.HasField("summary"):
            summary.update(items(r.summary.update))
    assert summary["final_return"] == 21.5 and "bottleneck" not in summary  # scalars only
    assert any(r.HasField("exit") for r in records)  # finished

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
