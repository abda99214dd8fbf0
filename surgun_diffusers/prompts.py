"""Target phrasings and paired distractor prompts.

A concept (``Van Gogh``) is erased through one or more target phrasings, templates with a slot
``{}`` (``a painting of a village by {}``); by default the kind's template from the built-in
pool (``a painting in the style of {}`` for artists). **Paired** distractors: each target line's
distractors are that same line with the concept swapped for each distractor name, so the
competition happens in the target's own context ("non-target trajectories under the same
prompt context"); **unpaired** (``paired=False``) puts every distractor name into the kind's
template instead, the same set for every target line.
"""

from __future__ import annotations

import re
from typing import Sequence

from surgun_core.distractors import apply_template, load_pool
from surgun_core.errors import SurgUnError

SLOT = "{}"


def normalise_template(line: str, concept: str) -> str:
    """A target line as a template with one ``{}`` slot.

    Accepts ``{}`` or ``{x}`` slots, or a line that names the concept literally (then the name,
    matched case-insensitively, becomes the slot)."""
    line = line.strip()
    if "{x}" in line:
        line = line.replace("{x}", SLOT)
    if SLOT in line:
        if line.count(SLOT) > 1:
            raise SurgUnError(f"[SurgUn] the target line {line!r} has {line.count(SLOT)} '{{}}' slots; use exactly one.")
        return line
    if concept and re.search(re.escape(concept), line, flags=re.IGNORECASE):
        return re.sub(re.escape(concept), lambda m: SLOT, line, count=1, flags=re.IGNORECASE)
    raise SurgUnError(
        f"[SurgUn] the target line {line!r} has no '{{}}' slot and does not contain the concept {concept!r}, so its "
        f"distractors cannot be made by swapping the concept. Write it as e.g. 'a painting of a village by {{}}'."
    )


def fill(template: str, name: str) -> str:
    """``template`` with its slot filled ("a" becomes "an" before a vowel, as the pools' templates do)."""
    return apply_template(template.replace(SLOT, "{x}"), name)


def target_templates(concept: str, lines: Sequence[str], kind: str) -> list[str]:
    """The target templates: the given lines, or the kind's pool template."""
    concept = (concept or "").strip()
    if not concept:
        raise SurgUnError("[SurgUn] the concept is empty. Give the name of what to erase, e.g. --concept 'Van Gogh'.")
    lines = [x for x in (s.strip() for s in lines) if x]
    if not lines:
        lines = [load_pool(kind).template]
    out: list[str] = []
    for line in lines:
        t = normalise_template(line, concept)
        if t not in out:
            out.append(t)
    return out


def paired_prompts(templates: Sequence[str], concept: str, distractors: Sequence[str],
                   kind: str, paired: bool = True) -> list[tuple[str, dict[str, str]]]:
    """``[(target prompt, {distractor name: distractor prompt})]``, one entry per target template."""
    names = [d.strip() for d in distractors if d.strip()]
    clash = [d for d in names if d.lower() == concept.strip().lower()]
    if clash:
        raise SurgUnError(f"[SurgUn] the concept {concept!r} is also listed among the distractors; remove it from the distractors.")
    if not paired:
        kind_t = load_pool(kind).template.replace("{x}", SLOT)
        shared = {d: fill(kind_t, d) for d in names}
        return [(fill(t, concept), dict(shared)) for t in templates]
    return [(fill(t, concept), {d: fill(t, d) for d in names}) for t in templates]
