"""Event files written without TensorFlow, read back with TensorBoard's own reader."""
import os

import numpy as np
from tensorboard.backend.event_processing import event_accumulator

from rltpu.tensorboard import EventWriter, crc32c


def read(log_dir):
    acc = event_accumulator.EventAccumulator(log_dir, size_guidance={"scalars": 0})
    acc.Reload()
    return acc


def test_crc32c_check_values():
    assert crc32c(b"123456789") == 0xE3069283  # the standard CRC-32C check value
    assert crc32c(b"") == 0
    assert crc32c(bytes(32)) == 0x8A9136AA  # RFC 3720 B.4: 32 bytes of zeros


def test_scalars_round_trip(tmp_path):
    writer = EventWriter(str(tmp_path))
    writer.scalars(100, {"mean_return": 12.5, "learner/update": np.float32(0.25),
                         "learner_updates": 3, "episodes": np.int64(7)})
    writer.scalars(250, {"mean_return": -1.0, "loss": 2.0, "not_yet": None, "flag": True,
                         "name": "x", "nan": float("nan")})
    writer.scalars(300, {})  # nothing numeric: no event
    writer.close()
    assert os.path.basename(writer.path).startswith("events.out.tfevents.")

    acc = read(str(tmp_path))
    assert sorted(acc.Tags()["scalars"]) == ["episodes", "learner/update", "learner_updates",
                                             "loss", "mean_return"]
    assert [(e.step, e.value) for e in acc.Scalars("mean_return")] == [(100, 12.5), (250, -1.0)]
    assert [(e.step, e.value) for e in acc.Scalars("learner/update")] == [(100, 0.25)]
    assert acc.Scalars("episodes")[0].value == 7.0
    assert acc.Scalars("loss")[0].step == 250
    assert acc.file_version == 2.0  # the first record names the format, as TensorFlow's do


def test_large_steps_and_wall_time(tmp_path):
    writer = EventWriter(str(tmp_path))
    writer.scalars(2**40 + 3, {"x": 1.0}, wall_time=1234.5)
    writer.close()
    event = read(str(tmp_path)).Scalars("x")[0]
    assert event.step == 2**40 + 3 and event.wall_time == 1234.5


def test_a_corrupt_record_is_detected(tmp_path):
    writer = EventWriter(str(tmp_path))
    writer.scalars(1, {"x": 1.0})
    writer.close()
    data = bytearray(open(writer.path, "rb").read())
    data[-6] ^= 0xFF  # a byte of the last event's payload; its CRC no longer matches
    open(writer.path, "wb").write(bytes(data))
    acc = read(str(tmp_path))
    assert "x" not in acc.Tags()["scalars"]
