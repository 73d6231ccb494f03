"""The daemon under systemd's notify protocol, and `ckptd health`, with a real `ckptd run` process.

The test owns the AF_UNIX datagram socket systemd would own (NOTIFY_SOCKET) and sets WATCHDOG_USEC.
A hung main loop is produced for real: the test takes SQLite's write lock (BEGIN IMMEDIATE) so the
loop's next heartbeat write waits in the busy handler. Reads (the STATUS counts) do not block in WAL,
which is why the daemon writes its heartbeat before every watchdog ping.
"""

from __future__ import annotations

import itertools
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.integration.daemon_harness import REPO_ROOT, DaemonProcess, Site, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore:torch.distributed is disabled")]

WATCHDOG_USEC = 1_000_000


class NotifyListener:
    """Collects (arrival time, fields) of every datagram sent to the socket."""

    def __init__(self, path: Path) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, list[str]]] = []
        self.ready_wall_time: float | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            fields = data.decode().split("\n")
            if "READY=1" in fields and self.ready_wall_time is None:
                self.ready_wall_time = time.time()
            self.messages.append((time.monotonic(), fields))

    def times(self, field: str, since: float = 0.0, until: float = float("inf")) -> list[float]:
        return [at for at, fields in list(self.messages) if field in fields and since <= at <= until]

    def first(self, prefix: str) -> list[str] | None:
        return next((f for _, f in list(self.messages) if any(x.startswith(prefix) for x in f)), None)

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        self.sock.close()


def start_health(config: Path, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "ckptd", "health", "--config", str(config), *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen[str]) -> tuple[int, str, str]:
    stdout, stderr = process.communicate(timeout=60)
    return process.returncode, stdout, stderr


def ckptd_health(config: Path, *args: str) -> tuple[int, str, str]:
    return finish(start_health(config, *args))


def gaps(times: list[float]) -> list[float]:
    return [b - a for a, b in itertools.pairwise(times)]


def supervisor_heartbeat(connection: sqlite3.Connection) -> float:
    query = "SELECT max(heartbeat_at) FROM workers WHERE id LIKE 'supervisor-%' AND stopped_at IS NULL"
    value: float = connection.execute(query).fetchone()[0]
    return value


def hold_write_lock(db: Path, seconds: float) -> tuple[float, float]:
    """Take SQLite's write lock like a stuck writer would, hold it, release it; return when.

    The lock is taken right after a supervisor heartbeat was committed, so a loop that wrote its
    heartbeat only every few seconds (and pinged the watchdog in between) would keep pinging.
    """
    connection = sqlite3.connect(db, isolation_level=None, timeout=10)
    try:
        last = supervisor_heartbeat(connection)
        wait_for(lambda: supervisor_heartbeat(connection) > last, 10, "a fresh heartbeat", interval=0.01)
        connection.execute("BEGIN IMMEDIATE")
        taken = time.monotonic()
        time.sleep(seconds)
        connection.execute("ROLLBACK")
        return taken, time.monotonic()
    finally:
        connection.close()


def test_ready_after_first_scan_watchdog_status_stopping_and_health(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # No workers: nothing is converted, so what the first scan queued stays visible. No reaper writes
    # either, so the only write the loop makes is the heartbeat that precedes each watchdog ping.
    site = Site(tmp_path, settings={"workers": {"count": 0}, "queue": {"reap_interval": 3600.0}})
    site.write_step("exp", 10)
    listener = NotifyListener(tmp_path / "notify.sock")
    monkeypatch.setenv("NOTIFY_SOCKET", str(tmp_path / "notify.sock"))
    monkeypatch.setenv("WATCHDOG_USEC", str(WATCHDOG_USEC))
    try:
        with DaemonProcess(site) as daemon:
            ready = wait_for(lambda: listener.first("READY=1"), 60, "READY=1")
            # The step present at start-up was queued before READY=1 was sent.
            jobs = site.jobs()
            assert [(j.step, str(j.state)) for j in jobs] == [(10, "queued")]
            assert listener.ready_wall_time is not None and jobs[0].created_at < listener.ready_wall_time
            assert listener.messages[0][1] == ready, "something was sent before READY=1"
            assert "STATUS=running=0, queued=1, failed=0, dead=0" in ready
            time.sleep(3.0)
            healthy = listener.times("WATCHDOG=1")
            assert len(healthy) >= 4
            # systemd's contract: never WATCHDOG_USEC without a ping (the daemon aims for half of it).
            assert max(gaps(healthy)) < WATCHDOG_USEC / 1e6, "a watchdog ping was late"
            statuses = [
                f for _, f in listener.messages if f == ["STATUS=running=0, queued=1, failed=0, dead=0"]
            ]
            assert len(statuses) >= 3

            code, stdout, stderr = ckptd_health(site.config)
            assert (code, stdout) == (0, "healthy\n"), stderr

            taken, released = hold_write_lock(site.db, 3.0)
            assert listener.times("WATCHDOG=1", since=taken + 1.0, until=released) == [], (
                "the watchdog was pinged while the main loop could not write"
            )
            resumed = wait_for(lambda: listener.times("WATCHDOG=1", since=released), 5, "pings again")
            assert resumed[0] - released < 1.5
            assert daemon.process.poll() is None

            assert daemon.terminate() == 0
        wait_for(lambda: listener.first("STOPPING=1"), 5, "STOPPING=1")
    finally:
        listener.close()
    stopping_at = listener.times("STOPPING=1")[0]
    assert listener.times("WATCHDOG=1", since=stopping_at) == []

    # The same database, but a watch root that is not there (an unmounted filesystem).
    unmounted_config = tmp_path / "unmounted.toml"
    unmounted_root = tmp_path / "not-mounted"
    unmounted_config.write_text(site.config.read_text().replace(f'"{site.runs}"', f'"{unmounted_root}"'))
    stopped, unmounted = start_health(site.config), start_health(unmounted_config)
    assert finish(stopped) == (
        1,
        "",
        "unhealthy: daemon: no running ckptd supervisor has registered in the database\n",
    )
    code, _, stderr = finish(unmounted)
    assert code == 1
    assert f"unhealthy: watch root {unmounted_root}: missing or not mounted\n" in stderr


def test_health_of_a_daemon_that_never_ran(tmp_path: Path) -> None:
    site = Site(tmp_path, settings={"workers": {"count": 0}})
    code, _, stderr = ckptd_health(site.config)
    assert code == 1
    assert (
        stderr
        == f"unhealthy: database sqlite:///{site.db}: {site.db} does not exist (has the daemon ever run?)\n"
    )
    assert not site.db.exists(), "the health check created the database"
