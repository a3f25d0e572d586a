"""The progress file of a generation run, so that an interrupted run resumes where it stopped.

Each finished class is appended at once (synced) to a JSONL file next to the output
(``<out>.partial.jsonl``); the output JSON is written atomically at the end and the progress
file removed. A run killed at any moment loses no finished class and never asks for it again.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, TextIO

from wca.descriptions.io import load_descriptions
from wca.files import write_atomic


def progress_path(out: str | Path) -> Path:
    """The JSONL progress file kept next to ``out`` while a run is incomplete."""
    out = Path(out)
    return out.with_name(out.name + ".partial.jsonl")


def read_done(out: Path, classes: set[str]) -> dict[str, list[str]]:
    """Classes already generated (with at least one description): those in ``out`` and in its
    progress file."""
    done: dict[str, list[str]] = {}
    if out.exists():
        done.update(load_descriptions(out))
    partial = progress_path(out)
    if partial.exists():
        for line in partial.read_text(encoding="utf-8").splitlines():
            try:
                record = json.loads(line)
                done[record["class"]] = list(record["descriptions"])
            except (json.JSONDecodeError, KeyError, TypeError):
                continue  # a line cut short when a run was killed
    done = {name: texts for name, texts in done.items() if any(t.strip() for t in texts)}
    unknown = sorted(set(done) - classes)
    if unknown:
        raise ValueError(
            f"{out} (or its progress file) has classes that are not in the class list: "
            f"{unknown[:5]}{' ...' if len(unknown) > 5 else ''}; start over with overwrite or "
            "choose another output"
        )
    return done


def append_done(log: TextIO, classname: str, descriptions: list[str]) -> None:
    """Append one finished class to the open progress file and sync it to disk."""
    record = {"class": classname, "descriptions": descriptions}
    log.write(json.dumps(record, ensure_ascii=False) + "\n")
    log.flush()
    os.fsync(log.fileno())


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON to a temporary file beside ``path`` and rename it over ``path``."""
    text = json.dumps(data, indent=4, ensure_ascii=False) + "\n"
    write_atomic(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))
