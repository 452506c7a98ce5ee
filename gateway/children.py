"""What each of the gateway's child processes (the writer, the rollups' folder, the delivery process) does first."""

from __future__ import annotations

import logging
import os
import signal

log = logging.getLogger("backchannel")


def start_child(what: str, *, niceness: int = 0, idle: bool = False) -> None:
    """Log to stderr (the parent's log), and ignore the stop signals sent to a whole process group (Ctrl+C in a
    terminal reaches every process of the gateway): a child ends when its parent closes the pipe to it, so never
    halfway through what it was sent. Then lower its priority, if it may: `idle`, to run only on CPU the others leave
    (Linux's idle scheduling class: any wake-up of another process preempts it at once; where that class is not
    available, the lowest niceness), else `niceness` below its parent."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    if idle:
        try:
            os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
            return
        except (AttributeError, OSError):  # not Linux, or not allowed
            niceness = 19
    if niceness:
        try:
            os.nice(niceness)
        except OSError as exc:
            log.warning("could not lower the %s's priority: %s", what, exc)
