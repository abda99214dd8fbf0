"""Choosing which weights to train, with PEFT's matching rules.

* a ``str`` pattern is a full regular expression: ``re.fullmatch(pattern, name)``;
* a list of strings matches a name that equals an entry or ends with ``"." + entry``.

A matched module that is not itself a weight-bearing layer (an attention block, a transformer
block) stands for every weight-bearing layer inside it, so ``["attn2"]`` trains the four
projections of every cross-attention block.
"""

from __future__ import annotations

import re
import time
from typing import Iterable, Sequence

import torch

from .errors import SurgUnError, short

Patterns = str | Sequence[str]


MATCH_BUDGET_S = 2.0
"""Time allowed to match one regular expression against all module names."""


def _bounded_fullmatch(pattern: str, n_names: int, what: str):
    """``fullmatch`` of ``pattern`` under a time budget.

    A mistyped or hostile expression (nested repeats, backreferences) can backtrack for hours in
    Python's ``re``, holding the GIL: the whole ComfyUI server freezes and Cancel cannot reach it.
    The ``regex`` module (installed with ComfyUI, through transformers) takes a timeout and
    releases the GIL while matching; without it, ``re`` is used as before.
    """
    try:
        import regex

        rx = regex.compile(pattern)
    except Exception:  # not installed, or a syntax only re accepts
        return re.compile(pattern).fullmatch
    deadline = time.monotonic() + MATCH_BUDGET_S

    def fullmatch(name: str):
        try:
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError
            return rx.fullmatch(name, timeout=left, concurrent=True)
        except TimeoutError:
            raise SurgUnError(
                f"[SurgUn] {what} {short(pattern)} takes too long to match (over {MATCH_BUDGET_S:g} s for {n_names} "
                "layer names). Simplify the regular expression (no nested repeats such as (a+)+, no backreferences), "
                "or give a list of block names instead."
            ) from None

    return fullmatch


def match_names(names: Iterable[str], patterns: Patterns, what: str = "block_pattern") -> list[str]:
    """Names matched by ``patterns`` (PEFT semantics), in input order. ``what`` names the input the
    patterns came from, for the messages."""
    names = list(names)
    if isinstance(patterns, str):
        try:
            re.compile(patterns)
        except re.error as e:
            raise SurgUnError(
                f"[SurgUn] {what} {short(patterns)} is not a valid regular expression ({e}). "
                "Fix the expression, or give a list of block names instead."
            ) from None
        fullmatch = _bounded_fullmatch(patterns, len(names), what)
        return [n for n in names if fullmatch(n)]
    entries = [p for p in patterns if p]
    return [n for n in names if any(n == p or n.endswith("." + p) for p in entries)]


def parse_pattern_text(text: str) -> Patterns:
    """Turn a node's text field into a pattern.

    ``re:<regex>`` is a full regular expression; anything else is a list of exact-or-suffix
    names separated by commas or new lines.
    """
    text = (text or "").strip()
    if text.startswith("re:"):
        return text[3:].strip()
    return [t.strip() for t in re.split(r"[,\n]", text) if t.strip()]


def _is_weight_layer(module: torch.nn.Module) -> bool:
    w = getattr(module, "weight", None)
    return isinstance(w, torch.Tensor) and w.ndim >= 2


def select_trainable(root: torch.nn.Module, patterns: Patterns, hint_filter: str = "attn", what: str = "block_pattern") -> list[str]:
    """Names of the weight-bearing layers (Linear/Conv) of ``root`` selected by ``patterns``.

    Raises ``SurgUnError`` when nothing matches; the message lists a few module names that exist
    (those containing ``hint_filter`` first) so the user can correct the pattern.
    """
    modules = dict(root.named_modules())
    names = [n for n in modules if n]
    matched = match_names(names, patterns, what)
    selected: list[str] = []
    seen = set()
    for name in matched:
        module = modules[name]
        if _is_weight_layer(module):
            candidates = [name]
        else:
            candidates = [f"{name}.{sub}" for sub, m in module.named_modules() if sub and _is_weight_layer(m)]
        for c in candidates:
            if c not in seen:
                seen.add(c)
                selected.append(c)
    if not selected:
        hints = [n for n in names if hint_filter in n.rsplit(".", 1)[-1]] or names
        shown = ", ".join(hints[:8])
        raise SurgUnError(
            f"[SurgUn] {what} {short(patterns if isinstance(patterns, str) else ', '.join(patterns))} matches no layer of this model. "
            f"Some names that exist: {shown}{' ...' if len(hints) > 8 else ''}. "
            "Use a list of names/suffixes (e.g. 'attn2') or 're:<full regex>'."
        )
    return selected
