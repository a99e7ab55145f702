"""The prediction log's disk bound: past ``max_bytes`` of finished files, delete the oldest.

The writer thread calls :meth:`DiskBound.closed` after each file it finishes. The bound keeps an
index of the finished files (name and size); it rescans the whole directory when the index is
older than ``rescan_s``, to see the files other workers wrote (they share the directory), and
otherwise adds only this process's new files. Past the bound it deletes the oldest files (by
the time in their names), across models, until under it, and removes day folders it emptied.

The rescan also deletes files a crashed process left half written: hidden files untouched for
``abandoned_s``.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from pathlib import Path

from server.predlog.format import log_files, parse


class DiskBound:
    """Keeps the log's finished files under ``max_bytes`` (only from the writer thread)."""

    def __init__(
        self,
        root: Path,
        max_bytes: int,
        *,
        rescan_s: float = 30.0,
        abandoned_s: float = 3_600.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.root = root
        self.max_bytes = max_bytes
        self.rescan_s = rescan_s
        self.abandoned_s = abandoned_s
        self._clock = clock
        self._files: dict[Path, tuple[int, str, int]] = {}
        """Finished file -> (epoch_ms, name, size): the sort key of age, and the size."""
        self._scanned_at: float | None = None
        self.total_bytes = 0
        self.deleted_files = 0
        self.errors = 0
        """Deletions that failed (other than the file being gone already)."""

    def closed(self, path: Path, size: int, *, open_paths: frozenset[Path] = frozenset()) -> None:
        """A file was finished at ``path``: index it, then delete the oldest files while the
        total is over the bound. ``open_paths``: hidden files this process is writing."""
        if self._scanned_at is None or self._clock() - self._scanned_at >= self.rescan_s:
            self.rescan(open_paths)
        found = parse(path)
        if found is not None and path not in self._files:
            self._files[path] = (found.epoch_ms, path.name, size)
            self.total_bytes += size
        self.enforce()

    def rescan(self, open_paths: frozenset[Path] = frozenset()) -> None:
        """Index every finished file under the root; delete abandoned hidden files."""
        files: dict[Path, tuple[int, str, int]] = {}
        now = time.time()
        for found in log_files(self.root, hidden=True):
            try:
                stat = found.path.stat()
            except OSError:
                continue  # deleted meanwhile
            if not found.hidden:
                files[found.path] = (found.epoch_ms, found.path.name, stat.st_size)
            elif found.path not in open_paths and now - stat.st_mtime > self.abandoned_s:
                with contextlib.suppress(OSError):
                    found.path.unlink()
        self._files = files
        self.total_bytes = sum(size for _, _, size in files.values())
        self._scanned_at = self._clock()

    def enforce(self) -> None:
        if self.total_bytes <= self.max_bytes:
            return
        emptied: set[Path] = set()
        for path, (_, _, size) in sorted(self._files.items(), key=lambda item: item[1][:2]):
            if self.total_bytes <= self.max_bytes:
                break
            try:
                path.unlink()
                self.deleted_files += 1
            except FileNotFoundError:
                pass  # another worker deleted it
            except OSError:
                self.errors += 1
                continue
            del self._files[path]
            self.total_bytes -= size
            emptied.add(path.parent)
        for folder in emptied:
            with contextlib.suppress(OSError):  # not empty (a file being written), or gone
                folder.rmdir()
