"""Worker processes that do not outlive their parent.

The proof pool (prover/epoch/executor.py) and the tokenizer pool (prover/metering.py) are
``spawn``ed ProcessPoolExecutor workers. If the parent dies without shutting them down
(SIGKILL, an OOM kill), nothing would stop them: they would keep their memory and CPU, and
multiprocessing's resource tracker would stay beside them. ``orphan_watchdog`` is their pool
initializer: a daemon thread that checks every ``POLL_SECONDS`` whether the parent is still
the one that started the worker (``os.getppid()``; once the parent dies the worker is
re-parented) and ends the worker at once if not. With every worker gone, the resource
tracker sees its pipe close and exits too. (``PR_SET_PDEATHSIG`` would fire on the death of
the parent *thread* that forked the worker, which for a pool started from a server's thread
pool is not the parent process's death, so it is not used.)
"""

import os
import threading

POLL_SECONDS = 0.5


def orphan_watchdog(parent_pid: int) -> None:
    """Pool initializer: exit this worker as soon as ``parent_pid`` is no longer its parent."""
    if os.getppid() != parent_pid:  # the parent died before the worker started
        os._exit(1)

    def watch() -> None:
        stop = threading.Event()
        while not stop.wait(POLL_SECONDS):
            if os.getppid() != parent_pid:
                os._exit(1)  # no cleanup: the parent that wanted the results is gone

    threading.Thread(target=watch, name="zkmeter-orphan-watchdog", daemon=True).start()
