"""Prompt embeddings per text-encoder identity, in memory and (optionally) on disk."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Callable

import torch

from ..safefile import save_safetensors_atomic


class EmbeddingCache:
    """Prompt embeddings per text-encoder identity, so a pool is encoded once per encoder.

    With a ``directory`` the embeddings also persist across restarts: one safetensors file per
    encoder identity, read on first use and rewritten (atomically) when new prompts are encoded.
    """

    FORMAT = "surgun.embeddings/1"

    def __init__(self, max_encoders: int = 4, directory: str | None = None):
        self.max_encoders = max_encoders
        self.directory = directory
        self._store: dict[str, dict[str, torch.Tensor]] = {}

    def _path(self, encoder_id: str) -> Path | None:
        if not self.directory:
            return None
        return Path(self.directory) / (re.sub(r"[^A-Za-z0-9_.-]", "_", encoder_id) + ".safetensors")

    def _load(self, encoder_id: str, store: dict) -> None:
        path = self._path(encoder_id)
        if path is None or not path.is_file():
            return
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                if meta.get("format") != self.FORMAT or meta.get("encoder") != encoder_id:
                    return
                emb = f.get_tensor("embeddings")
            store.update(zip(json.loads(meta["prompts"]), emb))
        except Exception:  # a damaged cache file is only a cache: it is rebuilt
            return

    def _save(self, encoder_id: str, store: dict) -> None:
        path = self._path(encoder_id)
        if path is None or not store:
            return
        prompts = list(store)
        save_safetensors_atomic({"embeddings": torch.stack([store[p] for p in prompts])}, str(path),
                                {"format": self.FORMAT, "encoder": encoder_id, "prompts": json.dumps(prompts)})

    def embedder(self, encoder_id: str, encode: Callable[[list[str]], torch.Tensor]) -> Callable[[list[str]], torch.Tensor]:
        if encoder_id not in self._store:
            self._store[encoder_id] = {}
            self._load(encoder_id, self._store[encoder_id])
        store = self._store.pop(encoder_id)
        self._store[encoder_id] = store  # most recently used last
        while len(self._store) > self.max_encoders:
            self._store.pop(next(iter(self._store)))

        def embed(prompts: list[str]) -> torch.Tensor:
            missing = [p for p in dict.fromkeys(prompts) if p not in store]
            if missing:
                out = encode(missing)
                for p, e in zip(missing, out):
                    store[p] = e.detach().float().cpu()
                self._save(encoder_id, store)
            return torch.stack([store[p] for p in prompts])

        return embed

    def size(self, encoder_id: str) -> int:
        return len(self._store.get(encoder_id, {}))
