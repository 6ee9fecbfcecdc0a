"""JAX's coordination service for a pod's learner processes, in a process of its own.

usage: python -m rltpu.coordinator HOST:PORT NUM_PROCESSES HEARTBEAT_TIMEOUT_S GRACE_S

Learner process 0 starts it beside itself (``devices.initialize_distributed``) and holds
its stdin. It serves until process 0 writes ``end`` (its run ended), or, once process 0
has gone without a word (killed, crashed), for ``GRACE_S`` more: long enough for the
other processes to notice that process 0 is lost and to leave with rltpu's one line. A
SIGTERM or SIGINT (sent to the whole process group, say) does not stop it while process 0
lives, which then still stops the run cleanly and needs the service to; it ends as soon
as process 0 has gone.
"""
import os
import select
import signal
import sys
import time

from rltpu import devices


def main(argv: list[str]) -> int:
    address, num_processes, heartbeat_timeout_s, grace_s = argv
    parent = os.getppid()
    signalled = []
    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, lambda *_: signalled.append(True))
    service = devices.serve_coordination(address, int(num_processes), int(heartbeat_timeout_s))
    print("serving", flush=True)
    # Nothing more to say: let go of process 0's pipes (they must close when it ends).
    with open(os.devnull, "wb") as null:
        os.dup2(null.fileno(), sys.stdout.fileno())
        os.dup2(null.fileno(), sys.stderr.fileno())
    ended = False
    while os.getppid() == parent:  # (its stdin stays open in a child that process 0 forked)
        if select.select([sys.stdin], [], [], 1.0)[0]:
            line = sys.stdin.readline()
            if line.strip() == "end" or not line:
                ended = line.strip() == "end"
                break
    if not ended:
        deadline = time.monotonic() + float(grace_s)
        while not signalled and time.monotonic() < deadline:
            time.sleep(0.2)
    # At once, the service still held: its shutdown (or its release) would wait seconds for
    # the clients' open calls, and for processes that are gone.
    os._exit(0 if service is not None else 1)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
