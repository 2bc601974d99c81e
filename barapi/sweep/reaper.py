"""Ends the Ray processes a sweep driver started, when the driver ends — even by kill -9.

Ray started by `ray.init()` inside a driver leaves its agents (ray::DashboardAgent,
ray::RuntimeEnvAgent) running for about a minute after the driver is killed, and its workers
(the trials, the wallet) for up to half a minute, until they notice that their raylet is
gone: a trial could go on sending requests, and a wallet actor on writing, while a resumed
driver starts. So the driver starts a watcher first (`Watcher`: this file run as a script,
in its own session, so that the terminal's Ctrl-C does not end it first) and, once Ray is
up, tells it Ray's session folder. The watcher waits for the driver's end of a pipe to close
— when the driver exits, however it dies — then ends every process that holds a file open in
that session folder (every Ray process does: its logs): SIGTERM, then SIGKILL after `GRACE`
seconds. Processes of a Ray cluster the driver joined (`--address`) have their own session
folder and are never touched (nor is anything else: but a process that keeps one of the
session's logs open, a `tail -f`, ends with them). (Ray's processes rename themselves, which overwrites their
/proc command line and environment: open files are what identifies them.)

Linux only (it reads /proc/PID/fd); elsewhere no watcher is started.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from contextlib import suppress
from pathlib import Path

GRACE = 3.0
"""Seconds between SIGTERM and SIGKILL."""
PROC = Path("/proc")


def holders(folder: str, proc: Path = PROC) -> set[int]:
    """Ids of the processes (those readable) with a file open under `folder`."""
    prefix = folder.rstrip(os.sep) + os.sep
    found = set()
    for entry in proc.iterdir() if proc.is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            links = [os.readlink(fd) for fd in (entry / "fd").iterdir()]
        except OSError:  # gone, or not ours
            continue
        if any(link.startswith(prefix) for link in links):
            found.add(int(entry.name))
    return found


def reap(folder: str, exclude: set[int], grace: float = GRACE) -> set[int]:
    """End the processes with a file open under `folder` (but those in `exclude`): SIGTERM,
    then SIGKILL after `grace` seconds for those still there. Returns the ids signalled."""
    targets = holders(folder) - exclude
    for pid in targets:
        _signal(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and holders(folder) & targets:
        time.sleep(0.1)
    for pid in holders(folder) & targets:
        _signal(pid, signal.SIGKILL)
    return targets


def _signal(pid: int, sig: signal.Signals) -> None:
    with suppress(OSError):  # already gone
        os.kill(pid, sig)


class Watcher:
    """The watcher of this process's Ray (see the module's docstring); a no-op off Linux."""

    def __init__(self) -> None:
        self._process: subprocess.Popen[bytes] | None = None
        if sys.platform.startswith("linux") and PROC.is_dir():
            # run as a script in isolated mode: only the standard library is imported
            self._process = subprocess.Popen(
                [sys.executable, "-I", __file__, str(os.getpid())], stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)

    def watch(self, session_folder: str) -> None:
        """End the processes of Ray's session in `session_folder` when this process ends."""
        if self._process is not None and self._process.stdin is not None:
            self._process.stdin.write(session_folder.encode() + b"\n")
            self._process.stdin.flush()

    def stop(self, timeout: float = 10.0) -> None:
        """After Ray's shutdown: the watcher ends any process of the session left, and exits."""
        if self._process is None:
            return
        if self._process.stdin is not None:
            self._process.stdin.close()
        with suppress(subprocess.TimeoutExpired):
            self._process.wait(timeout)
        self._process = None


def session_folder() -> str | None:
    """The session folder of the Ray this process started (None when Ray does not say)."""
    import ray

    node = getattr(getattr(ray, "_private", None), "worker", None)
    node = getattr(node, "_global_node", None)
    path = node.get_session_dir_path() if node is not None else None
    return str(path) if path else None


def main(argv: list[str]) -> None:
    """`python -I reaper.py DRIVER_PID`: read session folders from stdin until it ends, then
    end their processes (the driver's excluded)."""
    driver = int(argv[0])
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    folders = [line.decode().strip() for line in sys.stdin.buffer]
    for folder in filter(None, folders):
        reap(folder, {os.getpid(), driver})


if __name__ == "__main__":
    main(sys.argv[1:])
