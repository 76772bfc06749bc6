"""Processes that do not outlive the one that started them.

A collection's workers and a benchmark's cells are child processes; when their parent is killed
(SIGKILL runs no cleanup), they would otherwise run on, orphaned, and keep writing. On Linux the
kernel can send a child SIGKILL when its parent ends (`prctl(PR_SET_PDEATHSIG)`); elsewhere, and as a
backup inside Python workers, a daemon thread watches the parent's pid.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time

_PR_SET_PDEATHSIG = 1


def arm_death_signal(parent: int) -> None:
    """In the child: be killed when `parent` dies (Linux); exit at once if it has died already. Safe as a
    `preexec_fn` (the signal survives exec)."""
    if sys.platform.startswith("linux"):
        import ctypes

        try:
            ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        except (OSError, AttributeError):
            pass
    if os.getppid() != parent:  # the parent died before the signal was armed
        os._exit(1)


def die_with(parent: int) -> None:
    """In a Python child (e.g. a pool worker): `arm_death_signal`, plus a daemon thread that ends the process
    when its parent changes (the kernel's signal follows the parent *thread* that started the child)."""
    arm_death_signal(parent)

    def watch():
        while os.getppid() == parent:
            time.sleep(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watchdog", daemon=True).start()
