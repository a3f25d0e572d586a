"""Feature extraction by several processes started with torchrun (``torch.distributed``).

Under ``torchrun --nproc-per-node K [--nnodes ...] -m wca extract ...`` every rank encodes the
shards ``s`` of one cache with ``s % world_size == rank`` that are not already complete and
verified, and records each finished shard beside it (:meth:`ShardCache.write_shard` with
``record=True``), so an interrupted rank loses at most the shard it was encoding. The ranks then
meet at a barrier kept in the rendezvous store: a rank that fails posts why (the others stop at
once, naming it), a rank that never arrives is named when ``timeout`` runs out, so no rank waits
longer than that. Rank 0 merges the records into the manifest and goes on (scoring, for
``wca eval``); the other ranks are done.

Crop boxes depend only on (seed, image index, crop index) and encoder batches never straddle a
shard, so the features do not depend on the number of ranks. The cache folder must be one that
every rank sees (a shared file system across nodes).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import timedelta

import torch
import torch.distributed as dist

from wca.errors import RankError

DEFAULT_TIMEOUT = 1800.0  # seconds a rank waits for the others (30 min)
TIMEOUT_ENV = "WCA_DIST_TIMEOUT"
POLL_SECONDS = 0.1


def launched() -> bool:
    """True in a process started by torchrun (or with its environment) among several ranks."""
    return int(os.environ.get("WORLD_SIZE", "1")) > 1


def rank_device(device: str) -> str:
    """The device this rank should use: ``auto`` or ``cuda`` become ``cuda:LOCAL_RANK`` under
    torchrun when CUDA is here; anything else is the user's explicit choice."""
    if launched() and device in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{int(os.environ.get('LOCAL_RANK', '0'))}"
    return device


def resolve_timeout(seconds: float | None) -> float:
    """``seconds``, else ``$WCA_DIST_TIMEOUT``, else 30 minutes; must be positive."""
    if seconds is None:
        text = os.environ.get(TIMEOUT_ENV)
        try:
            seconds = DEFAULT_TIMEOUT if text is None else float(text)
        except ValueError:
            raise ValueError(f"${TIMEOUT_ENV}={text!r} is not a number of seconds") from None
    if not seconds > 0:
        raise ValueError(f"distributed timeout must be > 0 seconds, got {seconds}")
    return float(seconds)


@dataclass
class Ranks:
    """This process's place among the ranks, and the store their barriers meet in."""

    rank: int
    world_size: int
    store: dist.Store
    timeout: float
    _step: int = field(default=0, repr=False)  # barriers passed; every rank counts the same

    def owns(self, shard: int) -> bool:
        return shard % self.world_size == self.rank

    @contextlib.contextmanager
    def together(self, what: str) -> Iterator[None]:
        """Run the block on every rank, then wait for all of them; a rank whose block raises
        tells the others (which then fail naming it) before raising itself."""
        try:
            yield
        except BaseException as error:
            reason = f"{type(error).__name__}: {error}".rstrip(": ")
            with contextlib.suppress(Exception):  # the store may be gone too
                self.store.set(f"wca/{self._step + 1}/failed/{self.rank}", reason)
            raise
        self.barrier(what)

    def barrier(self, what: str) -> None:
        """Every rank arrives (or one fails, or ``timeout`` passes: :class:`RankError`); rank 0
        then waits for the others to leave, as it may be the process serving the store."""
        self._step += 1
        prefix = f"wca/{self._step}/"
        self._call(self.store.set, f"{prefix}done/{self.rank}", "1")
        self._wait(prefix, "done", what)
        self._call(self.store.set, f"{prefix}left/{self.rank}", "1")
        if self.rank == 0:
            self._wait(prefix, "left", what)

    def _wait(self, prefix: str, kind: str, what: str) -> None:
        deadline = time.monotonic() + self.timeout
        while True:
            missing = []
            for rank in range(self.world_size):
                failed = f"{prefix}failed/{rank}"
                if self._call(self.store.check, [failed]):
                    reason = self._call(self.store.get, failed).decode(errors="replace")
                    raise RankError(f"rank {rank} of {self.world_size} failed in {what}: {reason}")
                if not self._call(self.store.check, [f"{prefix}{kind}/{rank}"]):
                    missing.append(rank)
            if not missing:
                return
            if time.monotonic() > deadline:
                names = ", ".join(map(str, missing))
                raise RankError(
                    f"rank{'s' if len(missing) > 1 else ''} {names} of {self.world_size} did not "
                    f"finish {what} within {self.timeout:g} s (died or hung: see its log); rerun "
                    "the same command to resume from the shards already written"
                )
            time.sleep(POLL_SECONDS)

    def _call(self, operation, *args):
        try:
            return operation(*args)
        except (RuntimeError, OSError) as error:
            raise RankError(
                f"rank {self.rank}: lost the rendezvous store (rank 0 or the torchrun agent "
                f"serving it has stopped): {error}"
            ) from error


_JOINED: Ranks | None = None


def join(device: torch.device, timeout: float | None = None) -> Ranks | None:
    """Join the ranks torchrun started (once per process; None when not launched by it).

    The process group's backend is nccl on CUDA devices and gloo elsewhere. Barriers give up
    after ``timeout`` seconds (:func:`resolve_timeout`); the rendezvous, which also waits for
    every rank to start (import, load the model), after 30 minutes or ``timeout`` if longer.
    """
    global _JOINED
    if _JOINED is not None or not launched():
        return _JOINED
    seconds = resolve_timeout(timeout)
    start = timedelta(seconds=max(seconds, DEFAULT_TIMEOUT))
    where = f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')}"
    try:
        handshake = dist.rendezvous("env://", timeout=start)
        store, rank, world_size = next(handshake)
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(
            "nccl" if device.type == "cuda" else "gloo",
            store=store,
            rank=rank,
            world_size=world_size,
            timeout=start,
        )
    except (RuntimeError, ValueError, OSError) as error:
        raise RankError(
            f"rendezvous of {os.environ.get('WORLD_SIZE')} ranks at {where} failed within "
            f"{start.total_seconds():g} s: {error}"
        ) from error
    atexit.register(dist.destroy_process_group)
    _JOINED = Ranks(rank, world_size, store, seconds)
    return _JOINED
