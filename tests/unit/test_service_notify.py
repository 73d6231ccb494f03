"""SystemdNotifier against a real AF_UNIX datagram socket."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest

from ckptd.service.notify import SystemdNotifier


@pytest.fixture
def sock(tmp_path: Path) -> Iterator[socket.socket]:
    server = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    server.bind(str(tmp_path / "notify"))
    server.settimeout(2)
    yield server
    server.close()


def received(server: socket.socket) -> list[str]:
    messages = []
    server.setblocking(False)
    try:
        while True:
            messages.append(server.recv(4096).decode())
    except BlockingIOError:
        return messages
    finally:
        server.settimeout(2)


def test_without_notify_socket_everything_is_a_no_op() -> None:
    notifier = SystemdNotifier({"WATCHDOG_USEC": "2000000"})
    assert not notifier.enabled
    notifier.ready("x")
    notifier.watchdog()
    notifier.stopping()


def test_messages_are_one_datagram_each(sock: socket.socket) -> None:
    notifier = SystemdNotifier({"NOTIFY_SOCKET": sock.getsockname()})
    notifier.ready("queued=1")
    notifier.status("running=1")
    notifier.stopping()
    assert received(sock) == ["READY=1\nSTATUS=queued=1", "STATUS=running=1", "STOPPING=1\nSTATUS=stopping"]


def test_watchdog_pings_at_half_the_interval(sock: socket.socket) -> None:
    env = {"NOTIFY_SOCKET": sock.getsockname(), "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": str(os.getpid())}
    notifier = SystemdNotifier(env)
    assert notifier.watchdog_interval == 1.0
    for now in (100.0, 100.5, 100.99, 101.0, 101.2, 102.1):
        notifier.watchdog(now)
    assert received(sock) == ["WATCHDOG=1"] * 3  # at 100.0, 101.0 and 102.1
    assert not notifier.watchdog_due(102.5) and notifier.watchdog_due(103.1)


def test_watchdog_meant_for_another_process_is_ignored(sock: socket.socket) -> None:
    env = {"NOTIFY_SOCKET": sock.getsockname(), "WATCHDOG_USEC": "2000000", "WATCHDOG_PID": "1"}
    notifier = SystemdNotifier(env)
    assert notifier.watchdog_interval is None
    notifier.watchdog(10.0)
    assert received(sock) == []


def test_abstract_socket_address() -> None:
    name = f"ckptd-test-{os.getpid()}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as server:
        server.bind("\0" + name)
        server.settimeout(2)
        SystemdNotifier({"NOTIFY_SOCKET": "@" + name}).status("hello")
        assert server.recv(100) == b"STATUS=hello"


def test_a_vanished_socket_does_not_raise(tmp_path: Path) -> None:
    SystemdNotifier({"NOTIFY_SOCKET": str(tmp_path / "gone")}).ready("x")
