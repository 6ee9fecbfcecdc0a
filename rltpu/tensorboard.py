"""TensorBoard scalars without TensorFlow: the event file format, written by hand.

An event file is a sequence of TFRecords (length, masked CRC-32C of the length, an
``Event`` protobuf, masked CRC-32C of it). Scalars need three messages, encoded here
directly (field numbers from tensorflow/core/util/event.proto and summary.proto):
``Event{wall_time=1: double, step=2: int64, file_version=3: string, summary=5}``,
``Summary{value=1: repeated Value}``, ``Value{tag=1: string, simple_value=2: float}``.
"""
from __future__ import annotations

import math
import numbers
import os
import socket
import struct
import time
from typing import Mapping

from rltpu import storage


def _crc32c_table() -> list[int]:
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


_CRC_TABLE = _crc32c_table()


def crc32c(data: bytes) -> int:
    """CRC-32C (Castagnoli), as TFRecords use. Pure Python: rows are small and rare."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc = _CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def _masked_crc(data: bytes) -> int:
    crc = crc32c(data)
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def _varint(n: int) -> bytes:
    out = bytearray()
    n &= (1 << 64) - 1  # negative int64s are ten-byte varints
    while True:
        byte, n = n & 0x7F, n >> 7
        if n:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def _length_delimited(field: int, payload: bytes) -> bytes:
    return _varint(field << 3 | 2) + _varint(len(payload)) + payload


def _event(wall_time: float, step: int = 0, file_version: str | None = None,
           summary: bytes | None = None) -> bytes:
    out = _varint(1 << 3 | 1) + struct.pack("<d", wall_time) + _varint(2 << 3) + _varint(step)
    if file_version is not None:
        out += _length_delimited(3, file_version.encode())
    if summary is not None:
        out += _length_delimited(5, summary)
    return out


def _scalar_value(tag: str, value: float) -> bytes:
    return _length_delimited(1, _length_delimited(1, tag.encode())
                             + _varint(2 << 3 | 5) + struct.pack("<f", value))


class EventWriter:
    """Writes scalars to a new ``events.out.tfevents.*`` file in ``log_dir``."""

    def __init__(self, log_dir: str):
        # TensorBoard reads files whose names contain "tfevents"; the rest keeps them apart.
        name = (f"events.out.tfevents.{int(time.time()):010d}.{socket.gethostname()}."
                f"{os.getpid()}.rltpu")
        self.path = storage.join(log_dir, name)
        self._file = storage.AppendFile(self.path, binary=True)
        self._write(_event(time.time(), file_version="brain.Event:2"))

    def _write(self, event: bytes) -> None:
        header = struct.pack("<Q", len(event))
        self._file.write(header + struct.pack("<I", _masked_crc(header)) + event
                         + struct.pack("<I", _masked_crc(event)))

    def scalars(self, step: int, values: Mapping[str, float | int | None],
                wall_time: float | None = None) -> None:
        """One event holding every numeric value (None and non-numbers are skipped)."""
        summary = b"".join(_scalar_value(tag, float(v)) for tag, v in values.items()
                           if isinstance(v, numbers.Real) and not isinstance(v, bool)
                           and not math.isnan(v))
        if summary:
            self._write(_event(time.time() if wall_time is None else wall_time, step,
                               summary=summary))

    def sync(self) -> None:
        self._file.sync()

    def close(self) -> None:
        self._file.close()
