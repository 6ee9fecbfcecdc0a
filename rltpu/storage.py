"""Where a run directory lives: a local folder, or ``gs://BUCKET/PATH`` in Cloud Storage.

Every read and write of a run directory goes through this module. Local paths use the
operating system as before; ``gs://`` paths go through ``etils.epath`` (backed by gcsfs),
the path layer orbax itself writes checkpoints with, so the run's files and its
checkpoints reach the bucket the same way. Cloud Storage has no append and no rename of
folders: a file that grows (``metrics.jsonl``, TensorBoard events) is kept in memory and
uploaded whole at most every ``AppendFile.sync_every_s``, and on close.

``STORAGE_EMULATOR_HOST`` (what Google's client libraries read to reach an emulator, e.g.
``http://127.0.0.1:9023``) sends every read and write there: gcsfs reads it itself, and
tensorstore (orbax's array writer) is pointed at it through ``TENSORSTORE_GCS_HTTP_URL``.
"""
from __future__ import annotations

import contextlib
import io
import logging
import os
import re
import shutil
import time
import uuid

REMOTE_PREFIX = "gs://"
EMULATOR_VARIABLE = "STORAGE_EMULATOR_HOST"


class WriteError(OSError):
    """A write to a run directory failed (a full disk, a bucket's error); its message is one
    line naming the file and the cause."""


@contextlib.contextmanager
def writing(what: str):
    """Turns any failure of the block into a ``WriteError`` naming ``what``."""
    try:
        yield
    except WriteError:
        raise
    except Exception as e:  # noqa: BLE001 -- every cause of a failed write is reported alike
        raise WriteError(f"cannot write {what} ({describe_error(e)})") from e


def is_remote(path: str) -> bool:
    """Whether ``path`` names Cloud Storage (``gs://...``)."""
    return str(path).startswith(REMOTE_PREFIX)


def check_path(path: str, flag: str = "--run-dir") -> None:
    """Raises ``ValueError`` for a URL this module cannot reach (only ``gs://`` is)."""
    text = str(path)
    if "://" in text and not is_remote(text):
        raise ValueError(f"{flag} {text}: only local paths and gs://BUCKET/PATH are supported")
    if is_remote(text) and not text[len(REMOTE_PREFIX):].split("/", 1)[0]:
        raise ValueError(f"{flag} {text}: name a bucket, gs://BUCKET/PATH")


def _remote(path: str):
    """``path`` as an ``epath.Path``, with the emulator settings in place first."""
    _use_emulator()
    from etils import epath
    return epath.Path(path)


def _fresh(path: str):
    """``path`` as an ``epath.Path`` whose listing and existence are asked anew: gcsfs keeps
    the listings it has seen, and orbax's arrays (tensorstore) and other processes write
    around it."""
    import fsspec
    target = _remote(path)
    # the filesystem etils.epath uses: fsspec hands out one instance per set of arguments
    fsspec.filesystem("gcs", finalize_on_close=True).invalidate_cache()
    return target


def _use_emulator() -> None:
    """Points tensorstore at ``STORAGE_EMULATOR_HOST`` (gcsfs reads the variable itself).

    Called before the first Cloud Storage access (never at import). An emulator has no
    storage-control API, so gcsfs's bucket-type probe (which would warn on every call) is
    turned off for it; both only where the user has not set them."""
    host = os.environ.get(EMULATOR_VARIABLE)
    if not host:
        return
    url = host if "://" in host else f"http://{host}"
    os.environ.setdefault("TENSORSTORE_GCS_HTTP_URL", url)
    os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")


def join(base: str, *names: str) -> str:
    if is_remote(base):
        return "/".join([str(base).rstrip("/"), *names])
    return os.path.join(base, *names)


def absolute(path: str) -> str:
    """A local path made absolute (orbax requires it); a ``gs://`` path as it is."""
    return str(path).rstrip("/") if is_remote(path) else os.path.abspath(path)


def basename(path: str) -> str:
    return str(path).rstrip("/").rsplit("/", 1)[-1] if is_remote(path) else \
        os.path.basename(os.path.normpath(path))


def exists(path: str) -> bool:
    return _fresh(path).exists() if is_remote(path) else os.path.exists(path)


def isdir(path: str) -> bool:
    """A folder; in Cloud Storage, a prefix holding at least one object."""
    return _fresh(path).is_dir() if is_remote(path) else os.path.isdir(path)


def isfile(path: str) -> bool:
    return _fresh(path).is_file() if is_remote(path) else os.path.isfile(path)


def listdir(path: str) -> list[str]:
    """Names in a folder (none if it does not exist)."""
    if is_remote(path):
        folder = _fresh(path)
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []
    return sorted(os.listdir(path)) if os.path.isdir(path) else []


def makedirs(path: str, exist_ok: bool = False) -> None:
    """Makes a folder (in Cloud Storage folders exist as their objects' prefix; nothing to
    make)."""
    if is_remote(path):
        if not exist_ok and _remote(path).exists():
            raise FileExistsError(path)
        return
    with writing(path):
        os.makedirs(path, exist_ok=exist_ok)


def open_file(path: str, mode: str = "r"):
    """Opens a file to read, or to write whole (Cloud Storage uploads it on close)."""
    if is_remote(path):
        return _remote(path).open(mode)
    return open(path, mode)


def read_text(path: str) -> str:
    with open_file(path) as f:
        return f.read()


def write_text(path: str, text: str) -> None:
    """Writes a whole file so a reader never sees half of it: locally through a temporary
    file and a rename, in Cloud Storage by one upload (objects appear whole)."""
    with writing(path):
        if is_remote(path):
            _remote(path).write_text(text)
            return
        tmp = path + ".tmp"
        with open(tmp, "w") as f:
            f.write(text)
        os.replace(tmp, path)


def remove(path: str) -> None:
    """Deletes a file or a folder with everything in it."""
    if is_remote(path):
        target = _remote(path)
        if target.is_dir():
            target.rmtree()
        elif target.exists():
            target.unlink()
    elif os.path.isdir(path):
        shutil.rmtree(path)
    elif os.path.exists(path):
        os.remove(path)


def move(source: str, destination: str) -> None:
    """Moves a file or folder (in Cloud Storage: copies every object, then deletes)."""
    if is_remote(source):
        src = _fresh(source)
        if src.is_file():
            src.copy(_remote(destination))
            src.unlink()
            return
        for name in listdir(source):
            move(join(source, name), join(destination, name))
        if _fresh(source).exists():
            src.rmtree()
    else:
        shutil.move(source, destination)


def check_writable(run_dir: str, flag: str = "--run-dir") -> None:
    """Writes and deletes a probe object where ``run_dir`` would go, so an unreachable or
    read-only bucket is found before anything starts. A local folder is checked later, when
    it is made.

    Raises:
      ValueError: one line naming ``run_dir`` and what failed.
    """
    if not is_remote(run_dir):
        return
    probe = join(run_dir, f".rltpu-probe-{uuid.uuid4().hex}")
    # gcsfs logs each failed request with a traceback; the failure is reported once, here
    log = logging.getLogger("gcsfs")
    level = log.level
    log.setLevel(logging.CRITICAL)
    try:
        write_text(probe, "probe\n")
        remove(probe)
    except Exception as e:  # noqa: BLE001 -- any failure means "cannot write there"
        cause = e.__cause__ if isinstance(e, WriteError) and e.__cause__ is not None else e
        raise ValueError(f"{flag} {run_dir}: cannot write there ({describe_error(cause)})"
                         + _emulator_hint()) from None
    finally:
        log.setLevel(level)


def describe_error(e: BaseException) -> str:
    """One line: the operating system's words for the cause when there is an error code
    (``No space left on device``), then the exception's type and first line, cut short."""
    text = str(e).strip().splitlines()
    line = f"{type(e).__name__}: {text[0][:200] if text else ''}"
    code = getattr(e, "errno", None)
    if not isinstance(code, int):  # tensorstore's errors carry it in their text
        found = re.search(r"os_error_code='(\d+)'", str(e))
        code = int(found.group(1)) if found else None
    return f"{os.strerror(code)}; {line}" if isinstance(code, int) else line


def _emulator_hint() -> str:
    host = os.environ.get(EMULATOR_VARIABLE)
    return f"; {EMULATOR_VARIABLE}={host}" if host else ""


class AppendFile:
    """A file that grows by appends: ``metrics.jsonl``, TensorBoard events.

    Locally each ``write`` is appended and flushed at once. In Cloud Storage (no append)
    the whole content is kept in memory and uploaded on the first write, then when
    ``sync_every_s`` have passed since the last upload, on ``sync`` (the run calls it with
    each checkpoint, so the rows up to a checkpoint are there with it) and on ``close``; a
    file that already exists (a resumed run's) is read first and grown.

    Args:
      path: the file.
      binary: bytes rather than text.
      sync_every_s: Cloud Storage only: the most seconds a written row waits for upload.
    """

    def __init__(self, path: str, binary: bool = False, sync_every_s: float = 30.0):
        self.path, self._binary, self.sync_every_s = path, binary, sync_every_s
        self._remote = is_remote(path)
        if self._remote:
            self._buffer = io.BytesIO()
            if exists(path):
                with open_file(path, "rb") as f:
                    self._buffer.write(f.read())
            self._dirty, self._synced_at = False, None
        else:
            self._file = open(path, "ab" if binary else "a")

    def write(self, data) -> None:
        if not self._remote:
            with writing(self.path):
                self._file.write(data)
                self._file.flush()
            return
        self._buffer.write(data if self._binary else data.encode())
        self._dirty = True
        if self._synced_at is None or time.monotonic() - self._synced_at >= self.sync_every_s:
            self.sync()

    def sync(self) -> None:
        """Uploads what was written (Cloud Storage); locally every write is already there."""
        if self._remote and self._dirty:
            with writing(self.path), open_file(self.path, "wb") as f:
                f.write(self._buffer.getvalue())
            self._dirty, self._synced_at = False, time.monotonic()

    def close(self) -> None:
        if self._remote:
            self.sync()
        else:
            self._file.close()
