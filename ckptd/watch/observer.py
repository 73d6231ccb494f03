"""Filesystem events as wake-up hints for the scan loop (the scan stays the source of truth).

The daemon loop is::

    observer.start()
    while not stopping:
        observer.clear()          # before the scan, so events during the scan wake the next wait
        scanner.scan()
        observer.wait(interval)   # True: something relevant changed; False: the interval elapsed
    observer.stop()

``events`` uses inotify through watchdog; only the event kinds that can complete a checkpoint reach
the kernel mask (close-after-write, create, move), so a trainer streaming shards does not flood us and
our own reads (close-no-write) never wake us. ``poll`` starts no thread at all: right for NFS/Lustre,
where inotify sees nothing written by other hosts. ``auto`` tries inotify and falls back to ``poll``
when it cannot start (watch or instance limits); it also leaves roots on network filesystems
(/proc/mounts) unwatched, and uses ``poll`` when every root is on one. A root that does not exist
yet is covered by a non-recursive watch on its nearest existing ancestor and moved to the root
itself by :meth:`refresh`, which :meth:`wait` calls every time.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import structlog
from watchdog.events import DirCreatedEvent, DirMovedEvent, FileClosedEvent, FileCreatedEvent, FileMovedEvent

from ckptd.watch.fstype import filesystem_type, is_network_fs, read_mounts
from ckptd.watch.relevance import is_relevant

log = structlog.get_logger("ckptd.watch")

WatchMode = Literal["auto", "events", "poll"]
_WatchKey = tuple[str, bool, int]  # (path, recursive, inode): a re-created root gets a new watch
# Only these reach the inotify mask: no IN_MODIFY (a shard being streamed) and no IN_CLOSE_NOWRITE
# (our own reads of trackers and zip directories would wake us in a loop).
_FILTER: dict[str, Any] = {
    "event_filter": [FileClosedEvent, FileCreatedEvent, FileMovedEvent, DirCreatedEvent, DirMovedEvent]
}


class WatchStartError(RuntimeError):
    """``mode="events"`` was asked for but inotify could not start."""


class _WakeHandler:
    """Duck-typed watchdog handler (watchdog only calls ``dispatch``); it only sets the event."""

    def __init__(self, wake: threading.Event, *, any_dir: bool) -> None:
        self._wake = wake
        self._any_dir = any_dir  # ancestor watches: any new dir may be (a parent of) a missing root

    def dispatch(self, event: Any) -> None:
        kind = str(event.event_type)
        is_dir = bool(event.is_directory)
        dest = os.fsdecode(getattr(event, "dest_path", "") or "")
        if (self._any_dir and is_dir) or is_relevant(kind, is_dir, os.fsdecode(event.src_path), dest):
            self._wake.set()


class WakeupObserver:
    def __init__(self, roots: Sequence[Path], mode: WatchMode = "auto") -> None:
        self.roots = [Path(r) for r in roots]
        self.requested_mode: WatchMode = mode
        self.mode: Literal["events", "poll"] = "poll" if mode == "poll" else "events"
        self._wake = threading.Event()
        self._lock = threading.Lock()
        self._observer: Any = None
        self._watches: dict[_WatchKey, Any] = {}
        self._mounts = ""
        self._network_logged: set[str] = set()
        self._root_handler = _WakeHandler(self._wake, any_dir=False)
        self._ancestor_handler = _WakeHandler(self._wake, any_dir=True)

    def start(self) -> None:
        if self.requested_mode == "auto":
            self._mounts = read_mounts()
            if self.roots and all(self._on_network_fs(_watch_key(r)) for r in self.roots):
                self.mode = "poll"
                log.warning("watch.fallback_poll", reason="every root is on a network filesystem")
        if self.mode == "poll":
            log.info("watch.started", mode="poll", roots=[str(r) for r in self.roots])
            return
        try:
            with self._lock:
                self._observer = _new_observer()
                self._observer.start()
                self._sync_watches()
        except OSError as error:
            self._give_up_events(error)
            return
        log.info("watch.started", mode="events", roots=[str(r) for r in self.roots])

    def stop(self) -> None:
        """Stop and join the observer threads; safe to call twice or without start()."""
        with self._lock:
            observer, self._observer = self._observer, None
            self._watches.clear()
        _stop_observer(observer)
        self._wake.set()

    def wait(self, timeout: float) -> bool:
        """Block until a relevant change (True) or ``timeout`` seconds (False)."""
        self.refresh()
        return self._wake.wait(timeout)

    def clear(self) -> None:
        self._wake.clear()

    def wake(self) -> None:
        """Wake a waiter now (e.g. on shutdown or a manual rescan request)."""
        self._wake.set()

    @property
    def watching(self) -> list[str]:
        """Paths with a live watch (recursive roots and ancestors of missing roots)."""
        with self._lock:
            return sorted(key[0] for key in self._watches)

    def refresh(self) -> None:
        """Move watches to roots that appeared (or were re-created) since the last call."""
        if self.mode == "poll":
            return
        try:
            with self._lock:
                if self._observer is None:
                    return
                if self._sync_watches():
                    self._wake.set()  # a root (or a dir on the way to it) appeared or was re-created
        except OSError as error:
            self._give_up_events(error)

    def _sync_watches(self) -> bool:
        """Make the scheduled watches match the roots on disk; True when anything changed."""
        keys = {key for root in self.roots if (key := _watch_key(root)) is not None}
        wanted = {key for key in keys if not self._on_network_fs(key)}
        stale = [k for k in self._watches if k not in wanted]
        for key in stale:
            _unschedule(self._observer, self._watches.pop(key))
        added = sorted(wanted - self._watches.keys())
        for key in added:
            path, recursive, _ = key
            handler = self._root_handler if recursive else self._ancestor_handler
            self._watches[key] = self._observer.schedule(handler, path, recursive=recursive, **_FILTER)
            if not recursive:
                log.info("watch.waiting_for_root", watching=path)
        return bool(stale or added)

    def _on_network_fs(self, key: _WatchKey | None) -> bool:
        """In auto mode, a watch on NFS/Lustre would see no other host's writes: leave it to the scan."""
        if key is None or self.requested_mode != "auto":
            return False
        real = os.path.realpath(key[0])
        fs_type = filesystem_type(real, self._mounts)
        if not is_network_fs(fs_type):
            return False
        if real not in self._network_logged:
            self._network_logged.add(real)
            log.warning("watch.network_fs", path=real, fs_type=fs_type, hint="only the periodic scan sees it")
        return True

    def _give_up_events(self, error: OSError) -> None:
        if self.requested_mode == "events":
            self.stop()
            raise WatchStartError(f"inotify could not start: {error}; use watch mode 'poll'") from error
        self.stop()
        self.mode = "poll"
        log.warning(
            "watch.fallback_poll",
            error=type(error).__name__,
            detail=str(error),
            hint="raise fs.inotify.max_user_watches/instances, or set mode='poll' to silence this",
        )


def _watch_key(root: Path) -> _WatchKey | None:
    """Watch the root recursively when it exists, else its nearest existing ancestor, non-recursively."""
    candidate = root.absolute()
    recursive = True
    while True:
        try:
            st = candidate.stat()
        except OSError:
            st = None
        if st is not None and candidate.is_dir():
            return (str(candidate), recursive, st.st_ino)
        if candidate.parent == candidate:
            return None
        candidate, recursive = candidate.parent, False


def _new_observer() -> Any:
    try:
        from watchdog.observers.inotify import InotifyObserver
    except ImportError as error:  # not Linux
        raise OSError(errno.ENOSYS, f"inotify unavailable: {error}") from error
    return InotifyObserver()


def _unschedule(observer: Any, watch: Any) -> None:
    try:
        observer.unschedule(watch)
    except (KeyError, OSError) as error:
        # The kernel already dropped a watch whose dir was deleted.
        log.debug("watch.unschedule_failed", error=type(error).__name__)


def _stop_observer(observer: Any) -> None:
    if observer is None:
        return
    observer.stop()
    if observer.is_alive():
        observer.join()
