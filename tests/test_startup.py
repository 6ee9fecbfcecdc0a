"""Start-up order: the learner compiles beside Ray's start at the lowest CPU priority."""
import os
import sys
import threading

import pytest

from rltpu.startup import _at_low_priority


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread priority is Linux's")
def test_the_learner_thread_runs_at_the_lowest_priority_and_only_it():
    def own_priority():
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    caller = own_priority()
    result = []
    thread = threading.Thread(target=lambda: result.append(_at_low_priority(own_priority)))
    thread.start()
    thread.join()
    assert result == [19]
    assert own_priority() == caller  # the calling thread (and the process) keep theirs
