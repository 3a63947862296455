"""One run per output folder: a lock file that says who holds the folder.

``selfsup train`` takes ``<output_dir>/.selfsup.lock`` before it writes anything there and
releases it when it exits, however it exits. The lock is an exclusive ``flock`` held for the
run's whole life, so the kernel drops it when the process dies — even by ``kill -9`` — and a lock
file left by a killed run is stale by construction. The file's content (PID, host, start time,
command) is what a refused second run names. Where the file system has no ``flock`` (some network
mounts), the fallback is the file alone: it is stale when its PID no longer runs on this host;
a lock from another host is then never taken over automatically.

Under DDP only global rank 0 takes the lock: the other ranks of the same run (started by Lightning,
torchrun or SLURM, which announce ranks in environment variables) write nothing to the folder.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import socket
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from selfsup.errors import ConfigError

try:
    import fcntl
except ImportError:  # Windows: the PID/host fallback only
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".selfsup.lock"

log = logging.getLogger(__name__)

# Folders locked by this process (resolved path -> depth), so that `selfsup train` can hold the
# folder across training and evaluation while train() takes the same lock inside.
_HELD: Dict[Path, int] = {}


def launched_rank() -> int:
    """This process's global rank as its launcher announced it; 0 when not one of several.

    torchrun sets ``RANK``; Lightning's own launcher sets ``NODE_RANK`` and ``LOCAL_RANK`` for the
    processes it starts; SLURM sets ``SLURM_PROCID`` (read only when the job has several tasks).
    """
    def read(name: str) -> Optional[int]:
        try:
            return int(os.environ[name])
        except (KeyError, ValueError):
            return None

    rank = read("RANK")
    if rank is not None:
        return rank
    node, local = read("NODE_RANK"), read("LOCAL_RANK")
    if node is not None or local is not None:
        return (node or 0) * 1_000_000 + (local or 0)  # only "is it zero" matters
    if (read("SLURM_NTASKS") or 1) > 1:
        return read("SLURM_PROCID") or 0
    return 0


def describe_output_dir_error(output_dir: Path, err: OSError) -> str:
    """One line for an ``OSError`` met while creating or writing the run folder."""
    if isinstance(err, (NotADirectoryError, FileExistsError)) or err.errno in (errno.ENOTDIR, errno.EEXIST):
        for parent in [output_dir, *output_dir.parents]:
            if parent.exists() and not parent.is_dir():
                where = "is a file" if parent == output_dir else f"is under the file '{parent}'"
                return f"--output-dir '{output_dir}' {where}, not a folder; choose another --output-dir"
    if err.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return f"--output-dir '{output_dir}' is not writable ({err.strerror}); choose another --output-dir"
    if err.errno == errno.ENOSPC:
        return f"no space left on the device of --output-dir '{output_dir}' ({err.filename or output_dir}); free some space"
    return f"cannot write to --output-dir '{output_dir}': {err.strerror or err} ({err.filename or output_dir})"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _read_holder(path: Path) -> Dict[str, Any]:
    try:
        holder = json.loads(path.read_text())
        return holder if isinstance(holder, dict) else {}
    except (OSError, ValueError):  # being written, or not ours: described as unknown
        return {}


def _describe(holder: Dict[str, Any]) -> str:
    pid, host = holder.get("pid", "?"), holder.get("host", "?")
    started = holder.get("started", "?")
    command = holder.get("command")
    return f"PID {pid} on {host} (started {started}{', ' + repr(command) if command else ''})"


class RunLock:
    """Exclusive use of ``output_dir`` by this process, as a context manager.

    Args:
        output_dir: the run folder; created (with its parents) if missing, and removed again on
            release if this lock created it and nothing else was written there.
        command: what the lock file records as the holder's command (default: ``sys.argv``).
        enabled: ``False`` makes the lock a no-op (the non-zero ranks of a DDP run).

    Re-entrant within one process: the CLI holds the folder across training and evaluation while
    :func:`~selfsup.engine.train` takes the same lock inside.
    """

    def __init__(self, output_dir: str | os.PathLike, command: Optional[str] = None, enabled: bool = True) -> None:
        self.output_dir = Path(output_dir)
        self.path = self.output_dir / LOCK_NAME
        self.command = command if command is not None else " ".join(sys.argv)
        self.enabled = enabled
        self._fd: Optional[int] = None
        self._created: List[Path] = []
        self._key: Optional[Path] = None

    # ------------------------------------------------------------------ acquire / release
    def __enter__(self) -> "RunLock":
        if not self.enabled:
            return self
        key = self.output_dir.resolve()
        if key in _HELD:
            _HELD[key] += 1
            self._key = key
            return self
        self._make_folder()
        try:
            self._acquire()
        except BaseException:
            self._remove_created_folders()
            raise
        _HELD[key] = 1
        self._key = key
        return self

    def __exit__(self, *exc: Any) -> None:
        if self._key is None:
            return
        _HELD[self._key] -= 1
        if _HELD[self._key] == 0:
            del _HELD[self._key]
            self._release()
        self._key = None

    def _make_folder(self) -> None:
        missing = [p for p in [self.output_dir, *self.output_dir.parents] if not p.exists()]
        try:
            self.output_dir.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise ConfigError(describe_output_dir_error(self.output_dir, err)) from None
        if not self.output_dir.is_dir():
            raise ConfigError(describe_output_dir_error(self.output_dir, NotADirectoryError(errno.ENOTDIR, "")))
        self._created = missing  # leaf first

    def _remove_created_folders(self) -> None:
        for folder in self._created:
            try:
                folder.rmdir()  # only if empty
            except OSError:
                break

    def _acquire(self) -> None:
        try:
            if fcntl is not None:
                try:
                    self._acquire_flock()
                    return
                except OSError as err:
                    if err.errno not in (errno.ENOLCK, errno.EOPNOTSUPP, errno.ENOSYS, errno.EINVAL):
                        raise
                    log.debug("no flock on %s (%s): PID/host lock only", self.output_dir, err)
            self._acquire_exclusive_file()
        except OSError as err:
            raise ConfigError(describe_output_dir_error(self.output_dir, err)) from None

    def _acquire_flock(self) -> None:
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                raise ConfigError(self._refusal(_read_holder(self.path))) from None
            except BaseException:
                os.close(fd)
                raise
            # The holder before us may have unlinked the file between our open and our flock: the
            # lock then is on a file nobody else will see. Retry on the file that is there now.
            try:
                same = os.fstat(fd).st_ino == os.stat(self.path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)
        previous = _read_holder(self.path)
        if previous:
            log.warning("taking over the stale lock of %s in %s: that process no longer holds it",
                        _describe(previous), self.output_dir)
        self._fd = fd
        self._write_holder(fd)

    def _acquire_exclusive_file(self) -> None:
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            except FileExistsError:
                holder = _read_holder(self.path)
                pid = holder.get("pid")
                if holder.get("host") != socket.gethostname() or not isinstance(pid, int) or _pid_alive(pid):
                    raise ConfigError(self._refusal(holder, fallback=True)) from None
                log.warning("taking over the stale lock of %s in %s: that process no longer runs",
                            _describe(holder), self.output_dir)
                self.path.unlink(missing_ok=True)
                continue
            self._fd = fd
            self._write_holder(fd)
            return
        raise ConfigError(self._refusal(_read_holder(self.path)))

    def _refusal(self, holder: Dict[str, Any], fallback: bool = False) -> str:
        hint = (f"; if that run is gone, delete '{self.path}'" if fallback
                else "; wait for it to finish or choose another --output-dir")
        return f"--output-dir '{self.output_dir}' is in use by the selfsup run {_describe(holder)}{hint}"

    def _write_holder(self, fd: int) -> None:
        holder = {"pid": os.getpid(), "host": socket.gethostname(),
                  "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "command": self.command}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
        os.fsync(fd)

    def _release(self) -> None:
        if self._fd is None:
            return
        try:
            # Unlink before unlocking: a waiting process then finds no file (or a new one), never
            # ours unlocked but still named (see the inode check in _acquire_flock).
            self.path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None
        self._remove_created_folders()


__all__ = ["LOCK_NAME", "RunLock", "describe_output_dir_error", "launched_rank"]
