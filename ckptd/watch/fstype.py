"""Which filesystem a path is on, to skip inotify where it cannot see other hosts' writes.

inotify on NFS/Lustre/GPFS only reports changes made by this host (watchdog#504, #409); a trainer on
another node writes there unseen. In ``auto`` mode such roots get no watch: the periodic scan covers them.
"""

from __future__ import annotations

from pathlib import Path

PROC_MOUNTS = Path("/proc/mounts")

NETWORK_FS_TYPES = frozenset(
    {
        "nfs",
        "nfs4",
        "lustre",
        "gpfs",
        "beegfs",
        "cifs",
        "smb3",
        "smbfs",
        "ceph",
        "glusterfs",
        "9p",
        "afs",
        "panfs",
        "wekafs",
        "fuse.sshfs",
        "fuse.glusterfs",
        "fuse.juicefs",
        "fuse.gcsfuse",
        "fuse.s3fs",
        "fuse.ceph",
        "fuse.cephfs",
        "fuse.lustre",
    }
)


def read_mounts() -> str:
    try:
        return PROC_MOUNTS.read_text()
    except OSError:
        return ""


def filesystem_type(path: str, mounts_text: str) -> str | None:
    """The type of the longest mount point containing absolute ``path`` (pure; /proc/mounts format)."""
    best, best_type = "", None
    for line in mounts_text.splitlines():
        fields = line.split()
        if len(fields) < 3:
            continue
        mount_point = _unescape(fields[1])
        if _contains(mount_point, path) and len(mount_point) >= len(best):
            best, best_type = mount_point, fields[2]
    return best_type


def is_network_fs(fs_type: str | None) -> bool:
    return fs_type in NETWORK_FS_TYPES


def _contains(mount_point: str, path: str) -> bool:
    if mount_point == "/":
        return path.startswith("/")
    return path == mount_point or path.startswith(mount_point.rstrip("/") + "/")


def _unescape(field: str) -> str:
    """/proc/mounts writes space, tab, newline and backslash in mount points as octal escapes."""
    for code, char in (("\\040", " "), ("\\011", "\t"), ("\\012", "\n"), ("\\134", "\\")):
        field = field.replace(code, char)
    return field
