"""barapi.sweep.reaper: the processes of a sweep driver's Ray end with the driver, even when
it is killed with SIGKILL (issue 29, item 14: Ray's agents outlived a killed driver by about a
minute, its workers by half a minute). Real processes, no Ray: a "driver" starts a watcher and
a child that holds a file open in a "session folder", as Ray's processes hold their logs."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from barapi.sweep.reaper import holders, reap

pytestmark = [pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc"),
              pytest.mark.timeout(60)]

HOLDER = "import sys, time; f = open(sys.argv[1], 'w'); print('ready', flush=True); time.sleep(120)"


def alive(pid: int) -> bool:
    """Running (a zombie left to an init that does not reap counts as ended)."""
    try:
        state = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return False
    return "\nState:\tZ" not in state


def wait_gone(pid: int, seconds: float) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        time.sleep(0.05)
    return False


def test_reap_ends_the_processes_holding_a_file_in_the_folder_and_no_other(tmp_path: Path) -> None:
    session, other = tmp_path / "session", tmp_path / "other"
    session.mkdir()
    other.mkdir()
    inside = subprocess.Popen([sys.executable, "-c", HOLDER, str(session / "raylet.out")],
                              stdout=subprocess.PIPE, text=True)
    outside = subprocess.Popen([sys.executable, "-c", HOLDER, str(other / "x.log")],
                               stdout=subprocess.PIPE, text=True)
    try:
        assert inside.stdout and inside.stdout.readline() == "ready\n"
        assert outside.stdout and outside.stdout.readline() == "ready\n"
        assert holders(str(session)) == {inside.pid}
        assert reap(str(session), {os.getpid()}, grace=1.0) == {inside.pid}
        assert inside.wait(10) == -signal.SIGTERM
        assert outside.poll() is None  # not in the session: untouched
    finally:
        for process in (inside, outside):
            process.kill()
            process.wait()


DRIVER = """
import subprocess, sys, time
from barapi.sweep.reaper import Watcher
watcher = Watcher()
child = subprocess.Popen([sys.executable, "-c", sys.argv[2], sys.argv[1] + "/worker.out"],
                         stdout=subprocess.PIPE, text=True)
child.stdout.readline()
watcher.watch(sys.argv[1])
print(child.pid, flush=True)
time.sleep(120)
"""


def test_a_killed_drivers_processes_end_within_seconds(tmp_path: Path) -> None:
    """The driver is killed with SIGKILL: its watcher ends the session's processes at once."""
    session = tmp_path / "session"
    session.mkdir()
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, str(session), HOLDER],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert driver.stdout is not None
        worker = int(driver.stdout.readline())
        assert alive(worker)
        driver.kill()
        driver.wait()
        assert wait_gone(worker, 10), "the worker outlived its killed driver"
    finally:
        driver.kill()
        driver.wait()


def test_a_stopped_watcher_ends_what_is_left_and_exits(tmp_path: Path) -> None:
    from barapi.sweep.reaper import Watcher

    session = tmp_path / "session"
    session.mkdir()
    child = subprocess.Popen([sys.executable, "-c", HOLDER, str(session / "agent.log")],
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout and child.stdout.readline() == "ready\n"
        watcher = Watcher()
        watcher.watch(str(session))
        watcher.stop()  # after ray.shutdown(): stragglers end now
        assert child.wait(10) == -signal.SIGTERM
        assert alive(os.getpid())  # never this process
    finally:
        child.kill()
        child.wait()
