"""Yardstick v2: what every method trains on and what is evaluated, held out by construction.

Pure functions (no model, no torch): the runner (``yardstick.py``) builds every method's training
data and every evaluation set from these, and ``tests/benchmarks/test_yardstick_split.py``
intersects them, so a change that leaks evaluation prompts or seeds into training fails a test.

The rule (fixed, not tuned):

* the 8x8 table is split by the *other* attribute: for a style target the objects, for an object
  target the styles, into a train half (even indices) and an eval half (odd indices);
* every method trains on the target's prompts with train-half contexts only, and its distractor,
  anchor and retain prompts also use train-half contexts only (SurgUn's paired competition puts the
  distractor and ``{concept}`` retain names into the target lines' slots, so this holds for it by
  construction; the test checks it through ``surgun_core.pairing`` itself);
* UA, kept-on-target, mode spread and both attacks use the target with eval-half contexts
  (new contexts: generalisation);
* IRA/CRA use eval-half cells that contain neither the target nor any distractor/anchor concept;
  related-concept retention uses eval-half cells of the two concepts nearest the target;
* seeds: training samples (node and baselines: ``seed + batch index``, seed 0..2), evaluation
  renders, attack references and attack evaluation renders come from disjoint integer ranges.
"""

from __future__ import annotations

from . import world

# ---------------------------------------------------------------- seeds
TRAIN_SEED_SPAN = 1_000
"""Training samples of method seed ``s`` use sampler seeds ``s .. s + TRAIN_SEED_SPAN - 1`` (``seed + batch``)."""
SEED_BASES = {
    "eval_target": 1_000_000,
    "eval_retain": 1_100_000,
    "eval_related": 1_200_000,
    "attack_reference": 2_000_000,
    "attack_eval": 3_000_000,
    "paraphrase_eval": 4_000_000,
    "paraphrase_measure": 5_000_000,
    "pixel_floor": 6_000_000,
}
SEED_SPAN = 100_000
"""Each evaluation role uses ``base .. base + SEED_SPAN - 1`` (base + chunk index, + 1000 x attack seed)."""


def train_seed_range(seed: int) -> range:
    return range(seed, seed + TRAIN_SEED_SPAN)


def eval_seed_range(role: str) -> range:
    return range(SEED_BASES[role], SEED_BASES[role] + SEED_SPAN)


def attack_reference_seed(attack_seed: int) -> int:
    return SEED_BASES["attack_reference"] + 1000 * attack_seed


def attack_eval_seed(attack_seed: int) -> int:
    return SEED_BASES["attack_eval"] + 1000 * attack_seed


# ---------------------------------------------------------------- the table split
def names_of(kind: str) -> tuple[str, ...]:
    return world.STYLES if kind == "style" else world.OBJECTS


def contexts(kind: str, half: str) -> tuple[str, ...]:
    """The other attribute's values for a ``kind`` target: objects (style target) or styles
    (object target), train half = even indices, eval half = odd indices."""
    other = world.OBJECTS if kind == "style" else world.STYLES
    return other[0::2] if half == "train" else other[1::2]


def cell(kind: str, concept: str, ctx: str) -> str:
    """The canonical prompt with ``concept`` (of ``kind``) in context ``ctx`` (of the other kind)."""
    return world.prompt_for(ctx, concept) if kind == "style" else world.prompt_for(concept, ctx)


def slot_line(kind: str, name: str, ctx: str) -> str:
    """A SurgUn target line with the concept in braces: ``a circle in {neon} style``."""
    return cell(kind, "{" + name + "}", ctx)


def concept_prompt(kind: str, name: str) -> str:
    """ESD-x's concept-only prompt (the toy model was trained on these partial prompts)."""
    return f"{name} style" if kind == "style" else f"a {name}"


def eval_target_prompts(kind: str, name: str) -> list[str]:
    return [cell(kind, name, c) for c in contexts(kind, "eval")]


def eval_retain_prompts(kind: str, name: str, blocked) -> list[str]:
    """Eval-half cells without the target or any distractor/anchor concept (IRA and CRA)."""
    bad = {name, *blocked}
    return [cell(kind, n, c) for c in contexts(kind, "eval") for n in names_of(kind) if n not in bad]


def related_prompts(kind: str, related) -> list[str]:
    return [cell(kind, n, c) for c in contexts(kind, "eval") for n in related]


# ---------------------------------------------------------------- SurgUn, as a user wires the node
def surgun_node_text(kind: str, name: str, chosen, n_distractors: int | None = None) -> dict:
    """The SurgUn Train node's text inputs: target lines with the concept in braces (train-half
    contexts), the distractor names (the first ``n_distractors`` of them for the ablations), and
    retain lines ``{concept}`` for every concept that is neither the target nor one of ``chosen``."""
    rest = [n for n in names_of(kind) if n != name and n not in chosen]
    used = list(chosen) if n_distractors is None else list(chosen)[:n_distractors]
    return {"target": "\n".join(slot_line(kind, name, c) for c in contexts(kind, "train")),
            "distractors": "\n".join(used), "retain_prompts": "\n".join("{" + n + "}" for n in rest)}


def surgun_groups(kind: str, name: str, chosen, n_distractors: int | None = None):
    """The groups the node trains (``surgun_core.pairing.plan_groups``, as ``EraseRequest.groups``)."""
    from ...surgun_core.pairing import plan_groups

    text = surgun_node_text(kind, name, chosen, n_distractors)
    lines = lambda t: tuple(x.strip() for x in t.splitlines() if x.strip())
    return plan_groups(lines(text["target"]), lines(text["distractors"]), lines(text["retain_prompts"]))


# ---------------------------------------------------------------- paraphrases (gradient-free attack)
PARAPHRASE_FORMS = {
    "style": {
        "word_order": "a {X} style {c}",
        "comma": "a {c}, {X}",
        "comma_style": "a {c}, {X} style",
        "style_first": "{X} style, a {c}",
        "no_style_word": "a {c} in {X}",
        "two_objects": "a {c} and a {c2} in {X} style",
        "concept_only": "{X} style",
        "bare": "{X}",
    },
    "object": {
        "word_order": "a {c} style {X}",
        "comma": "a {X}, {c}",
        "comma_style": "a {X}, {c} style",
        "style_first": "{c} style, a {X}",
        "no_style_word": "a {X} in {c}",
        "two_styles": "a {X} in {c} and {c2} style",
        "concept_only": "a {X}",
        "bare": "{X}",
    },
}


def paraphrase_prompts(kind: str, name: str, form: str) -> list[str]:
    """The paraphrase ``form`` of the target over the eval-half contexts (c2: the next eval context)."""
    tpl = PARAPHRASE_FORMS[kind][form]
    cs = contexts(kind, "eval")
    return list(dict.fromkeys(tpl.format(X=name, c=c, c2=cs[(i + 1) % len(cs)]) for i, c in enumerate(cs)))


# ---------------------------------------------------------------- everything evaluated
def eval_prompt_sets(kind: str, name: str, chosen, related, forms=None) -> dict[str, list[str]]:
    """Every evaluation prompt set of one target (``forms``: paraphrase forms used; default all)."""
    out = {"UA": eval_target_prompts(kind, name), "retain": eval_retain_prompts(kind, name, chosen),
           "related": related_prompts(kind, related), "attack_soft_prompt": eval_target_prompts(kind, name)}
    for f in (PARAPHRASE_FORMS[kind] if forms is None else forms):
        out[f"paraphrase:{f}"] = paraphrase_prompts(kind, name, f)
    return out
