"""Processes a test starts: ended in ``finally``, waited for with timeouts, and found through
the PIDs the test started (never by scanning the machine's processes, some of which are
other people's); loopback ports held for them until they bind."""
import contextlib
import socket
import subprocess

import psutil

WAIT_S = 30
"""How long an ended process (or its output) is waited for."""


def end(procs, wait_s: float = WAIT_S) -> None:
    """Kills each of ``procs`` still running and every process it started (Ray's raylet,
    workers, ...: found from its PID before the kill, since once their parent dies they are
    another's children), then waits for them."""
    for proc in procs:
        if proc.poll() is not None:
            continue
        try:
            family = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            family = []
        proc.kill()
        for child in family:
            try:
                child.kill()
            except psutil.Error:
                pass
        psutil.wait_procs(family, timeout=wait_s)
    for proc in procs:
        proc.wait(timeout=wait_s)


@contextlib.contextmanager
def ended(*procs):
    """``with ended(proc, ...):`` whatever happens in the block, the processes (and theirs)
    are not left running after it."""
    try:
        yield
    finally:
        end(procs)


def said(proc, wait_s: float = WAIT_S) -> str:
    """What ``proc`` (started with ``stdout=PIPE``, text) wrote, for an assertion's message:
    it is ended first if still running, so reading its output cannot hang the test."""
    end([proc], wait_s)
    try:
        output, _ = proc.communicate(timeout=wait_s)
    except (subprocess.TimeoutExpired, ValueError):  # (ValueError: its pipe was read already)
        return "(its output could not be read)"
    return output or ""


@contextlib.contextmanager
def reserved_port():
    """A loopback port the OS chose, held while the block runs: bound with SO_REUSEPORT and
    not listening, so the processes started in the block can bind it (gRPC's servers, which
    jax.distributed's coordinator is, set SO_REUSEPORT too) while no other program can take
    it between the choice and their bind (a plain bind of it fails with EADDRINUSE)."""
    with socket.socket() as held:
        held.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        held.bind(("127.0.0.1", 0))
        yield held.getsockname()[1]


@contextlib.contextmanager
def metadata_server(attributes: dict[str, str]):
    """A GCE metadata server on loopback serving ``attributes`` (instance attributes, e.g. a
    TPU VM's ``agent-worker-number``) as the real one does: only to requests that carry
    ``Metadata-Flavor: Google``, 404 for any other key. Yields its ``127.0.0.1:PORT`` (what
    ``GCE_METADATA_IP`` takes)."""
    import http.server
    import threading
    prefix = "/computeMetadata/v1/instance/attributes/"

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 -- http.server's name
            key = self.path[len(prefix):] if self.path.startswith(prefix) else None
            if self.headers.get("Metadata-Flavor") != "Google":
                self.send_error(403)
            elif key not in attributes:
                self.send_error(404)
            else:
                body = attributes[key].encode()
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
