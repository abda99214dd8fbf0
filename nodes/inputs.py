"""Parsing the nodes' text inputs, the same way in every node."""

from __future__ import annotations


def split_lines(text: str) -> tuple[str, ...]:
    """Non-empty, stripped lines of a multiline text field, duplicates removed in order."""
    seen, out = set(), []
    for line in (text or "").splitlines():
        line = line.strip()
        if line and line.lower() not in seen:
            seen.add(line.lower())
            out.append(line)
    return tuple(out)


def resolve_distractors(target: str, distractors: str, distractor_set=None) -> tuple[str, tuple[str, ...], dict]:
    """``(target, distractor prompts, metadata)`` from a node's text fields and optional DISTRACTORS input.

    A connected DISTRACTORS input replaces the typed distractors, and an empty target then means
    the builder's target prompt. The metadata (empty without a DISTRACTORS input) says how the
    set was chosen.
    """
    target = (target or "").strip()
    if distractor_set is None:
        return target, split_lines(distractors), {}
    return target or distractor_set.target_prompt, tuple(distractor_set.prompts), distractor_set.metadata()
