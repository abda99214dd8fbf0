"""The built-in candidate pools (one text file per kind under ``surgun_core/pools``) and aliases."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from ..errors import SurgUnError

POOL_DIR = Path(__file__).resolve().parents[1] / "pools"
KINDS = ("artist", "character", "object", "nsfw", "custom")
CUSTOM_TEMPLATE = "{x}"


@dataclass(frozen=True)
class Pool:
    kind: str
    template: str
    source: str
    entries: tuple[str, ...]


def load_pool(kind: str) -> Pool:
    """The built-in candidate pool of ``kind`` (``custom`` has an empty pool)."""
    if kind not in KINDS:
        raise SurgUnError(f"[SurgUn] unknown kind {kind!r}; choose one of {', '.join(KINDS)}.")
    if kind == "custom":
        return Pool("custom", CUSTOM_TEMPLATE, "no built-in pool; candidates come from the user", ())
    header, entries = {}, []
    for line in (POOL_DIR / f"{kind}.txt").read_text(encoding="utf-8").splitlines():
        if line.startswith("#"):
            key, _, value = line[1:].partition(":")
            header[key.strip()] = value.strip()
        elif line.strip():
            entries.append(line.strip())
    return Pool(kind, header.get("template", "{x}"), header.get("source", ""), tuple(entries))


def load_alias_groups() -> list[list[str]]:
    groups = []
    for line in (POOL_DIR / "aliases.txt").read_text(encoding="utf-8").splitlines():
        if line.strip() and not line.startswith("#"):
            groups.append([n.strip() for n in line.split("|") if n.strip()])
    return groups


def aliases_of(name: str, groups: Sequence[Sequence[str]] | None = None) -> set[str]:
    """Lower-cased names listed as the same concept as ``name`` (including itself)."""
    key = name.strip().lower()
    out = {key}
    for group in load_alias_groups() if groups is None else groups:
        lowered = {g.lower() for g in group}
        if key in lowered:
            out |= lowered
    return out


def apply_template(template: str, x: str) -> str:
    """``template`` with ``{x}`` filled in, fixing "a" -> "an" before a vowel."""
    text = template.replace("{x}", x)
    return re.sub(r"\ba ([aeiouAEIOU])", r"an \1", text) if "a {x}" in template else text
