"""One writer per run folder: an exclusive lock on ``<run folder>/.lock``.

A campaign takes the lock before it does any work (before a forced restart deletes anything,
before the store is opened or images are selected) and holds it until it returns. A second
process on the same folder gets :class:`RunLockedError` at once, naming the process that holds
it (PID, host, start time), instead of racing it into the store.

The lock is ``fcntl.flock`` on an open file: the kernel releases it when its holder exits, even
by ``kill -9``, so a stale lock never blocks a rerun. The file itself is never deleted (deleting a
lock file another process has open would let a third process lock a new one); its text is only
a description of the holder, rewritten by each new holder.
"""

from __future__ import annotations

import datetime as _dt
import fcntl
import json
import os
import socket
import time
from pathlib import Path
from typing import Any

from onepixel.attack.store import StoreError

LOCK_NAME = ".lock"


class RunLockedError(StoreError):
    """The run folder is in use by another campaign process (the message names it)."""


def _describe(holder: dict[str, Any]) -> str:
    text = f"pid {holder.get('pid', '?')} on {holder.get('host', '?')}"
    return f"{text}, started {holder['started']}" if holder.get("started") else text


class RunLock:
    """The exclusive lock of one run folder; a context manager (``release`` on exit)."""

    def __init__(self, run_dir: str | os.PathLike[str]):
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    def acquire(self) -> RunLock:
        """Take the lock and return self; raise :class:`RunLockedError` naming the holder if taken."""
        self.run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise RunLockedError(
                f"{self.run_dir} is in use by another campaign ({_describe(holder)}); wait for it to "
                "finish, stop it, or use another run folder",
                settings=("out",),
            ) from None
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd
        holder = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": _dt.datetime.now().astimezone().isoformat(timespec="seconds"),
        }
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(holder).encode(), 0)
        return self

    def release(self) -> None:
        """Release the lock (closing the file releases it)."""
        if self._fd is not None:
            fd, self._fd = self._fd, None
            os.close(fd)

    def __enter__(self) -> RunLock:
        return self if self._fd is not None else self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


def _read_holder(fd: int, wait: float = 0.5) -> dict[str, Any]:
    """Return the holder description in the lock file (empty when unreadable); waits up to
    ``wait`` seconds for a holder that has just taken the lock to write it."""
    deadline = time.monotonic() + wait
    while True:
        try:
            data = json.loads(os.pread(fd, 65536, 0) or b"{}")
        except (OSError, ValueError):
            data = {}
        if (isinstance(data, dict) and data) or time.monotonic() > deadline:
            return data if isinstance(data, dict) else {}
        time.sleep(0.02)


def lock_run(run_dir: str | os.PathLike[str]) -> RunLock:
    """Return the taken lock of ``run_dir``; raise :class:`RunLockedError` naming the holder if taken."""
    return RunLock(run_dir).acquire()


__all__ = ["LOCK_NAME", "RunLock", "RunLockedError", "lock_run"]
