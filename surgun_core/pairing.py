"""Paired competition: which prompts each target phrasing trains against.

SurgUn's competition happens under the *same prompt context*: a target line's distractors are that
line with the concept swapped, so the erased prompt keeps everything but the concept ("a star in
{neon} style" competes with "a star in pastel style", not with "a circle in pastel style").

* A target line marks its concept in braces, ``a star in {neon} style``; or, when concept names are
  given (the Distractor Builder's targets), the first occurrence of one of them is the concept.
* Several concepts in one run: each target line belongs to the concept it names. A concept may have
  its own distractors (``per_concept``, e.g. one Distractor Builder set per target); the others use
  the shared distractor lines. No concept being erased may be another's distractor or retained
  concept: the descent would train it back.
* Distractor lines are concept names, put into each target line's slot (paired). A target line with
  no slot, or ``paired=False``, trains against the distractor *prompts* as they are (unpaired).
* Retain lines are full prompts, kept for every target line; a retain line that is only a concept
  in braces, ``{watercolor}``, is put into each target line's slot instead (the same contexts with
  an unrelated concept, so the rest of the prompt is kept where the concept is erased).
* ``retain_distractors``: each target line's distractor prompts are also retained (under their own
  prompt, with their own images), so the target prompt moves onto the distractors while the
  distractors' own prompts stay put. Measured on the toy canvas: without it, erasing ``square``
  turned its distractor and neighbour ``circle`` into rings.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Mapping, Sequence

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
    concept: str = ""
    """The concept this line erases, as written in it ("" for a line that names none)."""


def split_slot(line: str, concept: str | Sequence[str] = "") -> tuple[str, str, str] | None:
    """``(before, concept, after)`` of a target line, or None when it marks no concept. Without
    braces, the earliest occurrence of one of the ``concept`` names (the longest at a tie) is the slot."""
    m = SLOT.search(line)
    if m:
        return line[:m.start()], m.group(1).strip(), SLOT.sub(lambda k: k.group(1), line[m.end():])
    names = [concept] if isinstance(concept, str) else list(concept)
    found = [(i, -len(c), c) for c in names if c and (i := line.lower().find(c.lower())) >= 0]
    if found:
        i, _, c = min(found)
        return line[:i], line[i:i + len(c)], line[i + len(c):]
    return None


def unbrace(text: str) -> str:
    return SLOT.sub(lambda m: m.group(1), text)


def bare_concept(line: str) -> str | None:
    """The concept of a retain line written as ``{name}`` alone, else None."""
    m = SLOT.fullmatch(line.strip())
    return m.group(1).strip() if m else None


def with_distractors(retain: Sequence[str], distractors: Sequence[str]) -> tuple[str, ...]:
    """The retain prompts with each distractor prompt added once (``retain_distractors``)."""
    return tuple(dict.fromkeys((*retain, *distractors)))


def plan_groups(targets: Sequence[str], distractor_names: Sequence[str], retain: Sequence[str],
                distractor_prompts: Sequence[str] = (), concept: str | Sequence[str] = "", paired: bool = True,
                per_concept: Mapping[str, Sequence[str]] | None = None, retain_distractors: bool = False) -> list[Group]:
    """The training groups, one per target line (see the module docstring).

    ``distractor_prompts`` are used by unpaired lines (a Distractor Builder's template prompts);
    empty means the distractor lines themselves are the prompts. ``per_concept`` maps a concept
    name (any case) to its own distractor names. ``retain_distractors`` appends each group's
    distractor prompts to its retain prompts (those not already there).
    """
    def keep(retain: tuple[str, ...], distractors: tuple[str, ...]) -> tuple[str, ...]:
        return with_distractors(retain, distractors) if retain_distractors else retain

    as_prompts = tuple(unbrace(d) for d in (distractor_prompts or distractor_names))
    names = tuple(unbrace(d).strip() for d in distractor_names)
    own = {k.strip().lower(): tuple(unbrace(d).strip() for d in v) for k, v in (per_concept or {}).items()}
    context = [c for c in (bare_concept(r) for r in retain) if c]
    shared = tuple(unbrace(r) for r in retain if bare_concept(r) is None)
    slots = [split_slot(line, concept) for line in targets]
    erased = {s[1].lower(): s[1] for s in slots if s is not None}
    groups = []
    for line, slot in zip(targets, slots):
        if slot is None or not paired:
            groups.append(Group(unbrace(line), as_prompts, keep(shared, as_prompts), False, slot[1] if slot else ""))
            continue
        before, name, after = slot
        mine = own.get(name.lower(), names)
        clash = [d for d in (*mine, *context) if d.lower() in erased]
        if clash:
            other = erased[clash[0].lower()]
            if other.lower() == name.lower():
                raise SurgUnError(
                    f"[SurgUn] the concept {short(name)} being erased is also listed as a distractor or a retained "
                    f"concept. Remove {short(clash[0])} from distractors / retain_prompts."
                )
            raise SurgUnError(
                f"[SurgUn] {short(other)} is erased in this run and also a distractor or retained concept of {short(name)}: "
                f"training toward it would bring it back. Remove {short(clash[0])} from the distractors / retain_prompts of "
                f"{short(name)} (the Distractor Builder keeps every target out of the others' sets)."
            )
        paired_d = tuple(before + d + after for d in mine)
        groups.append(Group(before + name + after, paired_d, keep(tuple(before + c + after for c in context) + shared, paired_d),
                            True, name))
    return groups


def concepts_of(groups: Sequence[Group]) -> list[str]:
    """The distinct concepts of ``groups`` in order (case-insensitive; "" for lines that name none)."""
    return list({g.concept.lower(): g.concept for g in groups}.values())
