"""Which data files qalign wrote: the ones whose registry entry's `qalign` block records their sha256.

An entry records `sha256` and `bytes` of the data file written with it, and `replaces_sha256`, the file it
replaced: the entry is registered before the rename, so after a kill between the two the file on disk is the one
it replaced, and still qalign's. Entries from before qalign recorded hashes vouch for whatever file they name.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from qalign.errors import QalignError
from qalign.paths import dataset_file

ANY = "*"  # an entry without hashes (written by an older qalign): its file counts as qalign's


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def entry_meta(entry: Any) -> dict[str, Any] | None:
    """An entry's `qalign` block, or None when qalign did not write the entry."""
    meta = entry.get("qalign") if isinstance(entry, dict) else None
    return meta if isinstance(meta, dict) else None


def known_contents(entry: Any) -> set[str]:
    """The sha256s of the files `entry` says qalign wrote ({ANY} for an entry from before hashes, {} for none)."""
    meta = entry_meta(entry)
    if meta is None:
        return set()
    if "sha256" not in meta:
        return {ANY}
    return {h for h in (meta.get("sha256"), meta.get("replaces_sha256")) if isinstance(h, str)}


def check_file_is_ours(dataset_dir: Path, entry: Any, name: str, entry_file: Path | None) -> None:
    """Refuse to replace an existing data/<name>.json that no qalign entry describes (written by hand, by
    LLaMA-Factory, or changed since qalign wrote it). `entry_file` is the resolved file `entry` names."""
    path = dataset_file(name, dataset_dir)
    if not path.exists():
        return
    known = known_contents(entry) if entry_file == path.resolve() else set()
    if ANY in known or (known and file_sha256(path) in known):
        return
    why = ("has changed since qalign wrote it (dataset_info.json records another content)" if known else
           "was not written by qalign (no qalign entry in dataset_info.json describes it)")
    raise QalignError(f"{path}: exists and {why}; converting '{name}' would overwrite it. Pick another --dataset "
                      "name, move the file away, or pass --force to replace it.")
