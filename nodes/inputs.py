"""Parsing the nodes' text inputs, the same way in every node."""

from __future__ import annotations

from dataclasses import dataclass, field


def split_lines(text: str) -> tuple[str, ...]:
    """Non-empty, stripped lines of a multiline text field, duplicates removed in order."""
    seen, out = set(), []
    for line in (text or "").splitlines():
        line = line.strip()
        if line and line.lower() not in seen:
            seen.add(line.lower())
            out.append(line)
    return tuple(out)


@dataclass(frozen=True)
class Distractors:
    """What a node's target and distractor inputs say, with or without a DISTRACTORS input."""

    target: str
    names: tuple[str, ...]
    """Distractor lines: concept names put into each target line's slot (or full prompts for unpaired lines)."""
    prompts: tuple[str, ...] = ()
    """The builder's template prompts, for target lines that do not name the concept; empty = ``names``."""
    concept: str = ""
    """The builder's target name, found in target lines that mark no concept in braces."""
    metadata: dict = field(default_factory=dict)
    concepts: tuple[str, ...] = ()
    """The builder's target names when it has several targets (erased together)."""
    per_concept: tuple[tuple[str, tuple[str, ...]], ...] = ()
    """(target name, its own distractor names) per target of a several-target builder."""


def resolve_distractors(target: str, distractors: str, distractor_set=None, single: str = "") -> Distractors:
    """A connected DISTRACTORS input replaces the typed distractors, and an empty target then means
    the builder's target prompt(s). The metadata (empty without a DISTRACTORS input) says how the set
    was chosen. A node that takes one concept names itself in ``single`` and refuses several."""
    from ..surgun_core.errors import SurgUnError

    target = (target or "").strip()
    if distractor_set is None:
        shared, own = split_distractors(distractors)
        return Distractors(target, shared, per_concept=own)
    sets = getattr(distractor_set, "sets", None)
    if sets is not None:
        if single:
            raise SurgUnError(
                f"[SurgUn] {single} checks one concept, but distractor_set holds {len(sets)} targets "
                f"({distractor_set.target}). Use one {single} per concept, each fed by a Distractor Builder with one target line."
            )
        return Distractors(target or distractor_set.target_prompt, tuple(distractor_set.names), tuple(distractor_set.prompts),
                           "", distractor_set.metadata(), tuple(s.target for s in sets),
                           tuple((s.target, tuple(s.names)) for s in sets))
    return Distractors(target or distractor_set.target_prompt, tuple(distractor_set.names), tuple(distractor_set.prompts),
                       distractor_set.target, distractor_set.metadata())


def split_distractors(text: str) -> tuple[tuple[str, ...], tuple[tuple[str, tuple[str, ...]], ...]]:
    """The distractor field: names one per line, shared by every concept; a line that is only a concept in
    braces, ``{neon}``, starts that concept's own list (the lines under it, up to the next such line).
    Returns (shared names, ((concept, its names), ...))."""
    from ..surgun_core.errors import SurgUnError, short
    from ..surgun_core.pairing import bare_concept

    shared: list[str] = []
    own: dict[str, list[str]] = {}
    current: list[str] = shared
    for line in (x.strip() for x in (text or "").splitlines()):
        concept = bare_concept(line) if line else None
        if concept is None:
            if line and line.lower() not in {n.lower() for n in current}:
                current.append(line)
            continue
        if concept.lower() in {c.lower() for c in own}:
            raise SurgUnError(f"[SurgUn] distractors lists the header {short(line)} twice. Put all of that concept's "
                              "distractors under one header.")
        current = own.setdefault(concept, [])
    empty = [c for c, names in own.items() if not names]
    if empty:
        raise SurgUnError(f"[SurgUn] distractors has the header {short('{' + empty[0] + '}')} with no names under it. "
                          "List that concept's distractors on the lines below it, or remove the header.")
    return tuple(shared), tuple((c, tuple(names)) for c, names in own.items())


# What an object arriving through each socket type has (ComfyUI's own classes and the pack's).
SOCKET_ATTRS = {
    "MODEL": ("get_model_object", "model"),
    "CLIP": ("tokenize", "encode_from_tokens"),
    "VAE": ("decode",),
    "CLIP_VISION": ("encode_image",),
    "DISTRACTORS": ("prompts", "names", "target", "target_prompt"),
    "BLOCKS": ("names", "metadata"),
    "ERASED_WEIGHTS": ("deltas", "metadata"),
}


def require_socket(name: str, value, kind: str, optional: bool = False) -> None:
    """Refuse, before any work, a socket input that holds something else than a ``kind`` output.

    ComfyUI checks the type of a link, but a value typed in place of a link (a hand-edited or
    generated workflow file) passes its checks and would reach the node as a string or number.
    """
    from ..surgun_core.errors import SurgUnError, short

    if value is None:
        if optional:
            return
        raise SurgUnError(f"[SurgUn] {name} is not connected. Link it to a node that outputs {kind}.")
    if not all(hasattr(value, a) for a in SOCKET_ATTRS[kind]):
        raise SurgUnError(
            f"[SurgUn] {name} must be connected to a {kind} output, but it holds a {type(value).__name__} value "
            f"{short(value, 40)} (a hand-edited workflow?). Link {name} to a node that outputs {kind}."
        )
