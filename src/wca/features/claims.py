"""Several processes filling one feature cache at once: each encodes the shards no other process
is encoding, loads those another process finished, and waits only for the rest.

A process encodes a shard while it holds the shard's lock (``shard-NNNNN.lock``,
:class:`wca.files.FileLock`), and marks its progress there as it goes. The view pipeline claims
shards as it reaches them (:meth:`ShardClaims.images`), so two processes started together take
turns: one claims shard 0, the other finds it held and claims shard 1, and so on. A shard found
held is left for later; one whose lock is free but which another process finished since this
one looked is loaded, not recomputed. When a round is done, the process waits, holding no lock
(so two processes can never wait for each other), until the first shard it left is let go, and
starts another round over the shards still missing. The lock dies with its holder, so a shard
whose process was killed is claimed and encoded by the next one that reaches it. A holder that
is stopped (SIGSTOP) or hung keeps its lock: once it has made no progress for the cache's
``patience``, the waiting process fails naming it, or takes the shard over (the holder, if it
resumes, writes the same bytes).

Locks are taken without blocking in the pipeline and waited for only between rounds, and the
ranks of a torchrun (:mod:`wca.features.distributed`) own disjoint shards: they never wait for
each other here. Where the file system keeps no locks, every process encodes every shard it
is missing (as before locks), with a warning; the results are the same.
"""

from __future__ import annotations

import collections
import logging
import threading
import warnings
from collections.abc import Callable, Iterator, Sequence

from torch import Tensor

from wca.features.cache import ShardCache
from wca.files import FileLock, LocksUnsupported

log = logging.getLogger("wca")


class ShardClaims:
    """The shards ``pending`` of ``cache`` (None: no cache, every shard is this process's),
    claimed one at a time. ``accept(tensors)``: whether a shard another process finished can be
    used (a strict run does not use one with skipped images)."""

    def __init__(
        self,
        cache: ShardCache | None,
        pending: Sequence[int],
        verify: bool,
        accept: Callable[[dict[str, Tensor]], bool],
    ) -> None:
        self.cache, self.verify, self.accept = cache, verify, accept
        self.pending = list(pending)
        self.claimed: collections.deque[int] = collections.deque()  # in the order of the stream
        self.loaded: dict[int, dict[str, Tensor]] = {}  # finished by another process
        self.busy: list[int] = []  # held by another process in this round
        self._locks: dict[int, FileLock] = {}
        self._guard = threading.Lock()  # the pipeline's thread claims while this one releases
        self._closed = False
        self._locking = cache is not None
        self._seen: dict[int, object] = {}  # each shard's entry when this pass looked at it
        if cache is not None and self.pending:  # (a complete cache may be read-only)
            cache.folder.mkdir(parents=True, exist_ok=True)
            self._seen = {shard: cache.shards.get(shard) for shard in self.pending}

    def images(self, ranges: Sequence[range]) -> Iterator[int]:
        """The image indices of the pending shards this process claims, shard after shard (the
        order the view pipeline makes them in); each claimed shard is appended to
        :attr:`claimed` before its first image."""
        self.busy = []
        for shard in list(self.pending):
            if self._claim(shard):
                self.claimed.append(shard)
                yield from ranges[shard]

    def _claim(self, shard: int) -> bool:
        if not self._locking:
            return True
        lock = self.cache.shard_lock(shard)
        with self._guard:
            if self._closed:
                return False
            try:
                if not lock.try_acquire():
                    self.busy.append(shard)
                    return False
            except LocksUnsupported as error:
                warnings.warn(
                    f"{self.cache.folder}: no file locks here ({error.strerror}); processes "
                    "that fill this cache at the same time will each encode every shard",
                    stacklevel=2,
                )
                self._locking = False
                return True
            self._locks[shard] = lock
        entry = self.cache.entry_on_disk(shard)
        if entry is not None and entry != self._seen[shard]:
            tensors = self.cache.load(shard, self.verify, entry)  # written since we looked
            self._seen[shard] = entry
            if tensors is not None and self.accept(tensors):
                self.loaded[shard] = tensors
                self.finish(shard)
                return False
        return True

    def beat(self) -> None:
        """Mark this process's progress on the shards it holds (for processes waiting)."""
        with self._guard:
            for lock in self._locks.values():
                lock.beat()

    def finish(self, shard: int) -> None:
        """The shard is written (or loaded): let its lock go and delete the lock file."""
        with self._guard:
            lock = self._locks.pop(shard, None)
            if lock is not None:
                lock.release(remove=True)

    def wait(self) -> None:
        """Between rounds, holding no lock: wait until the first shard another process held
        in the last round is let go (finished, or its process died), or its holder has made
        no progress for the cache's patience (:meth:`wca.files.FileLock.wait`)."""
        if not self.busy:
            raise RuntimeError(f"shards {self.pending} are neither claimed nor held by another")
        shard = self.busy[0]
        lock = self.cache.shard_lock(shard)
        log.info(
            f"{self.cache.folder}: waiting for shard {shard}, which another process is "
            f"encoding ({lock.holder() or 'holder unknown'})"
        )
        lock.wait(self.cache.patience)
        lock.release(remove=True)  # the next round claims it, or loads it if it was finished

    def close(self) -> None:
        """Let every lock still held go and delete its file (an interrupted or failed pass):
        those shards are missing and any process may claim them."""
        with self._guard:
            self._closed = True
            for lock in self._locks.values():
                lock.release(remove=True)
            self._locks.clear()
