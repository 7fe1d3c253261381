# test-case-name: tests.test_real_disk_process
"""Real small file systems for disk tests: ext4 on a loop device.

    with LoopDisk.create(tmp_path / "disk", size_mib=24) as disk:           # a small disk
        ...run a node with its db under disk.mount...
        disk.fill(leave_bytes=256 * 1024)      # the file system is full
        disk.unfill()                          # room again

    with LoopDisk.create(tmp_path / "disk", size_mib=64, backing_mib=12) as disk:
        ...                                    # the device fails (ENOSPC) once 12 MiB are written
        disk.grow_backing(96)                  # ... until it is given more

The second form is a thinly provisioned device: the ext4 file system believes it
has ``size_mib``, but its image is a sparse file in a ``tmpfs`` of
``backing_mib``; once that is full, every write of the device fails (the
kernel reports ENOSPC to ``fsync`` and ``Buffer I/O error`` in its log) while
``df`` still shows free space, as a thin volume or a full SAN pool does.

Needs root, ``mount``, ``losetup`` and ``mkfs.ext4`` (``e2fsprogs``);
``unavailable()`` says why not where they are missing, for a skip. Every
mount made is undone by ``close`` (lazily if something still holds it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path
from types import TracebackType

import attrs

_TOOLS = ("mount", "umount", "mkfs.ext4", "e2fsck")


def _run(*argv: str) -> None:
    subprocess.run(argv, check=True, capture_output=True, text=True, timeout=60)


def unavailable() -> str | None:
    """Why a loop-device file system cannot be made here, or None if it can."""
    if os.geteuid() != 0:
        return "loop-device file systems need root"
    missing = [tool for tool in _TOOLS if shutil.which(tool) is None]
    if missing:
        return f"missing {', '.join(missing)}"
    if not Path("/dev/loop-control").exists():
        return "no /dev/loop-control (loop devices are not available)"
    return None


@attrs.define
class LoopDisk:
    """A mounted ext4 file system on a loop device; see the module docstring."""

    root: Path
    mount: Path
    image: Path
    backing: Path | None
    _mounted: list[Path] = attrs.field(factory=list)

    @classmethod
    def create(cls, root: Path, size_mib: int, backing_mib: int | None = None) -> LoopDisk:
        """A new file system of size_mib mounted at ``root/mnt``; with
        backing_mib, its image lives in a tmpfs of that size (a thin device)."""
        root.mkdir(parents=True, exist_ok=True)
        disk = cls(root=root, mount=root / "mnt", image=root / "disk.img", backing=None)
        try:
            if backing_mib is not None:
                disk.backing = root / "backing"
                disk.backing.mkdir()
                _run("mount", "-t", "tmpfs", "-o", f"size={backing_mib}m", "tmpfs", str(disk.backing))
                disk._mounted.append(disk.backing)
                disk.image = disk.backing / "disk.img"
            with open(disk.image, "wb") as f:
                f.truncate(size_mib * 2**20)
            _run("mkfs.ext4", "-q", "-F", "-m", "0", str(disk.image))
            disk.mount.mkdir()
            _run("mount", "-o", "loop", str(disk.image), str(disk.mount))
            disk._mounted.append(disk.mount)
        except BaseException:
            disk.close()
            raise
        return disk

    @property
    def _ballast(self) -> Path:
        return self.mount / "ballast"

    def free_bytes(self) -> int:
        st = os.statvfs(self.mount)
        return st.f_bavail * st.f_frsize

    def fill(self, leave_bytes: int = 0) -> None:
        """Fill the file system with a ballast file until at most about
        leave_bytes are free (written and synced, not sparse)."""
        chunk = b"\xa5" * 2**16
        with open(self._ballast, "ab") as f:
            while self.free_bytes() > leave_bytes + len(chunk):
                try:
                    f.write(chunk)
                    f.flush()
                except OSError:
                    break
            os.fsync(f.fileno())

    def unfill(self) -> None:
        """Remove the ballast: the room it took is free again."""
        self._ballast.unlink(missing_ok=True)

    def grow_backing(self, backing_mib: int) -> None:
        """Give a thin device's tmpfs more room (its writes succeed again)."""
        if self.backing is None:
            raise ValueError("this disk is not thin (no backing_mib)")
        _run("mount", "-o", f"remount,size={backing_mib}m", str(self.backing))

    def repair(self) -> None:
        """What an operator does after a disk failure: unmount, check
        (``e2fsck -fy``: replays the journal, fixes what it finds) and mount
        again. Needed after ext4 aborted its journal (on a thin device out
        of room, a block of the journal may be the first write refused):
        the program sees the same EIO as for a failed write of its own, but
        the file system turns read-only until it is checked."""
        _run("umount", str(self.mount))
        self._mounted.remove(self.mount)
        fsck = subprocess.run(["e2fsck", "-fy", str(self.image)], capture_output=True, text=True, timeout=120)
        if fsck.returncode >= 4:  # 1 and 2: errors corrected
            raise RuntimeError(f"e2fsck could not repair {self.image}: {fsck.stdout}{fsck.stderr}")
        _run("mount", "-o", "loop", str(self.image), str(self.mount))
        self._mounted.append(self.mount)

    def close(self) -> None:
        """Unmount everything this disk mounted, innermost first; a busy
        mount is detached lazily (the loop device goes with its last user)."""
        while self._mounted:
            path = self._mounted.pop()
            try:
                _run("umount", str(path))
            except subprocess.CalledProcessError:
                subprocess.run(["umount", "-l", str(path)], capture_output=True, timeout=60)

    def __enter__(self) -> LoopDisk:
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
