"""torchrun's entry point for tests/test_distributed.py: `wca` whose rank 1 dies (SIGKILL) right
after writing its first cache shard, as when a node is lost mid-run."""

from __future__ import annotations

import os
import signal
import sys

from wca.cli import main
from wca.features.cache import ShardCache

_write_shard = ShardCache.write_shard


def _write_then_die(self, shard, *args, **kwargs):
    _write_shard(self, shard, *args, **kwargs)
    if os.environ.get("RANK") == "1":
        os.kill(os.getpid(), signal.SIGKILL)


ShardCache.write_shard = _write_then_die
sys.exit(main())
