"""An append-only, on-disk cache of LLM responses, keyed by backend, model and prompt.

One JSON object a line. A crash can at worst leave a partial last line, which is skipped on load, so every response
written before the crash is kept and a rerun prompts only what is missing. A later line for the same key replaces an
earlier one (re-prompting failures appends, never rewrites).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path


def cache_key(backend: str, model: str, prompt) -> str:
    """sha256 of the backend, the model and the full prompt (messages as sent)."""
    blob = json.dumps([backend, model, prompt], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.entries: dict[str, dict] = {}
        if self.path.exists():
            with open(self.path, encoding="utf-8") as handle:
                for line in handle:
                    try:
                        entry = json.loads(line)
                    except json.JSONDecodeError:
                        continue  # a line cut short by a crash
                    if isinstance(entry, dict) and "key" in entry:
                        self.entries[entry["key"]] = entry
        self._handle = None

    def get(self, key: str) -> dict | None:
        return self.entries.get(key)

    def __len__(self) -> int:
        return len(self.entries)

    def put_many(self, entries: list[dict]) -> None:
        """Append entries (each with a "key") and flush them to disk before returning."""
        if not entries:
            return
        if self._handle is None:
            self._handle = open(self.path, "a", encoding="utf-8")
            if self._handle.tell() > 0:
                self._handle.write("\n")  # never glue onto a partial last line
        for entry in entries:
            self.entries[entry["key"]] = entry
            self._handle.write(json.dumps(entry, ensure_ascii=False) + "\n")
        self._handle.flush()
        os.fsync(self._handle.fileno())

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
