"""Progress bars for every long loop of the package (extraction, scoring, text encoding,
classify, describe), one helper so that all of them behave alike.

On a terminal (or in a notebook) a live tqdm bar. Anywhere else (a log file, a pipe, CI) no
``\\r`` frames: a line when a phase starts, one each time it passes another
:data:`STEP_PERCENT` percent (every :data:`STEP_SECONDS` seconds when the total is unknown)
and one when it ends early. ``enabled=False`` (the CLI's ``-q``/``--no-progress``) shows
nothing.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from typing import IO, Any

from tqdm import tqdm
from tqdm.autonotebook import tqdm as auto_tqdm  # tqdm's own unless in a notebook

STEP_PERCENT = 5
STEP_SECONDS = 30.0
LINE_FORMAT = (
    "{desc}: {percentage:.0f}% ({n_fmt}/{total_fmt} {unit}) [{elapsed}<{remaining}, {rate_fmt}]"
)


def progress_bar(
    iterable: Iterable | None = None,
    *,
    total: float | None = None,
    desc: str,
    unit: str = "it",
    enabled: bool = True,
    file: IO[str] | None = None,
    **options: Any,
) -> tqdm:
    """A tqdm bar on ``file`` (default stderr): live on a terminal, as log lines elsewhere,
    disabled when not ``enabled``. ``options`` go to tqdm (``initial``, ``leave``...)."""
    stream = sys.stderr if file is None else file
    if not enabled:
        return tqdm(iterable, total=total, desc=desc, disable=True)
    if file is None and auto_tqdm is not tqdm:  # a notebook: its widget
        return auto_tqdm(iterable, total=total, desc=desc, unit=unit, **options)
    if _is_terminal(stream):
        return tqdm(iterable, total=total, desc=desc, unit=unit, file=stream, **options)
    return LineBar(iterable, total=total, desc=desc, unit=unit, file=stream, **options)


def _is_terminal(stream: IO[str]) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed file
        return False


class LineBar(tqdm):
    """A tqdm bar that writes whole lines, never ``\\r``: at its start, at every
    :data:`STEP_PERCENT` percent passed, and a last line if it ends before 100%."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._shown: int | None = None  # the last step written
        kwargs["leave"] = False  # tqdm's own closing frame would be a '\r'
        iterable = args[0] if args else kwargs.get("iterable")
        total = kwargs.get("total")
        if total is None and hasattr(iterable, "__len__"):
            total = len(iterable)
        if total:  # tqdm's own format when the total is unknown: count, time, rate
            kwargs.setdefault("bar_format", LINE_FORMAT)
        kwargs.setdefault("mininterval", 0.0)
        kwargs.setdefault("smoothing", 0.0)  # the average rate so far: steadier in a log
        super().__init__(*args, **kwargs)

    def _step(self) -> int:
        if self.total:
            return int(100 * min(self.n, self.total) / self.total // STEP_PERCENT)
        started = getattr(self, "start_t", None)  # not yet set while tqdm's __init__ runs
        return 0 if started is None else int((self._time() - started) // STEP_SECONDS)

    def _write_line(self) -> None:
        self._shown = self._step()
        self.fp.write(self.__str__() + "\n")
        self.fp.flush()

    def display(self, msg: str | None = None, pos: int | None = None) -> bool:
        if msg is not None:  # a clearing frame ('') or tqdm's own notice: not for a log
            return False
        if self._step() != self._shown:
            self._write_line()
        return True

    def clear(self, nolock: bool = False) -> None:
        """Nothing to clear on a line that is already written."""

    def close(self) -> None:
        if not self.disable and (self._step() != self._shown or not self.total):
            self._write_line()  # where it ended: a run stopped early, or an unknown total
        super().close()
