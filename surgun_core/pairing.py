"""Paired competition: which prompts each target phrasing trains against.

SurgUn's competition happens under the *same prompt context*: a target line's distractors are that
line with the concept swapped, so the erased prompt keeps everything but the concept ("a star in
{neon} style" competes with "a star in pastel style", not with "a circle in pastel style").

* A target line marks its concept in braces, ``a star in {neon} style``; or, when a concept name is
  given (the Distractor Builder's target), the first occurrence of that name is the concept.
* Distractor lines are concept names, put into each target line's slot (paired). A target line with
  no slot, or ``paired=False``, trains against the distractor *prompts* as they are (unpaired).
* Retain lines are full prompts, kept for every target line; a retain line that is only a concept
  in braces, ``{watercolor}``, is put into each target line's slot instead (the same contexts with
  an unrelated concept, so the rest of the prompt is kept where the concept is erased).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Sequence

from .errors import SurgUnError, short

SLOT = re.compile(r"\{([^{}]+)\}")


@dataclass(frozen=True)
class Group:
    """One target phrasing and what it trains against."""

    target: str
    """The target prompt as it is trained (braces removed)."""
    distractors: tuple[str, ...]
    retain: tuple[str, ...]
    paired: bool
    """Whether the distractors (and bare-concept retain lines) were put into this line's slot."""


def split_slot(line: str, concept: str = "") -> tuple[str, str, str] | None:
    """``(before, concept, after)`` of a target line, or None when it marks no concept."""
    m = SLOT.search(line)
    if m:
        return line[:m.start()], m.group(1).strip(), SLOT.sub(lambda k: k.group(1), line[m.end():])
    if concept:
        i = line.lower().find(concept.lower())
        if i >= 0:
            return line[:i], line[i:i + len(concept)], line[i + len(concept):]
    return None


def unbrace(text: str) -> str:
    return SLOT.sub(lambda m: m.group(1), text)


def bare_concept(line: str) -> str | None:
    """The concept of a retain line written as ``{name}`` alone, else None."""
    m = SLOT.fullmatch(line.strip())
    return m.group(1).strip() if m else None


def plan_groups(targets: Sequence[str], distractor_names: Sequence[str], retain: Sequence[str],
                distractor_prompts: Sequence[str] = (), concept: str = "", paired: bool = True) -> list[Group]:
    """The training groups, one per target line (see the module docstring).

    ``distractor_prompts`` are used by unpaired lines (a Distractor Builder's template prompts);
    empty means the distractor lines themselves are the prompts.
    """
    as_prompts = tuple(unbrace(d) for d in (distractor_prompts or distractor_names))
    names = tuple(unbrace(d).strip() for d in distractor_names)
    context = [c for c in (bare_concept(r) for r in retain) if c]
    shared = tuple(unbrace(r) for r in retain if bare_concept(r) is None)
    groups = []
    for line in targets:
        slot = split_slot(line, concept) if paired else None
        if slot is None:
            groups.append(Group(unbrace(line), as_prompts, shared, False))
            continue
        before, name, after = slot
        clash = [d for d in (*names, *context) if d.lower() == name.lower()]
        if clash:
            raise SurgUnError(
                f"[SurgUn] the concept {short(name)} being erased is also listed as a distractor or a retained "
                f"concept. Remove {short(clash[0])} from distractors / retain_prompts."
            )
        groups.append(Group(
            before + name + after,
            tuple(before + d + after for d in names),
            tuple(before + c + after for c in context) + shared,
            True,
        ))
    return groups
