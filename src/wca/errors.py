"""Errors of bad settings, named by the setting (``alpha``, ``n_run``), never by a command-line
flag: the library does not know how a setting was given; the CLI maps names to its flags."""

from __future__ import annotations


class SettingError(ValueError):
    """A setting with a value that cannot work: ``setting`` names it, the message says why."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(f"{setting}: {message}")
        self.setting = setting
        self.reason = message


class RankError(RuntimeError):
    """Under torchrun: another rank failed, or did not reach a barrier within the timeout."""


class OutputExists(ValueError):
    """A file that is not this run's result would be replaced; ``setting`` names the setting
    that allows it (the CLI adds its flag)."""

    setting = "overwrite"


class LockStalled(RuntimeError):
    """Another process holds a lock and has made no progress for as long as this one waits;
    ``setting`` names the option that takes such a lock over (the CLI adds its flag)."""

    setting = "lock_takeover"
