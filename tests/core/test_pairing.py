"""Paired competition: each target line trains against itself with the concept swapped."""

import pytest

from surgun_pack.surgun_core.errors import SurgUnError
from surgun_pack.surgun_core.pairing import concepts_of, plan_groups, split_slot


def test_braces_mark_the_concept_and_distractors_take_its_place():
    groups = plan_groups(["a star in {neon} style", "a {neon} ring"], ["pastel", "dots"], ["a photo of a dog", "{gradient}"])
    assert [g.target for g in groups] == ["a star in neon style", "a neon ring"]
    assert groups[0].distractors == ("a star in pastel style", "a star in dots style")
    assert groups[1].distractors == ("a pastel ring", "a dots ring")
    # a bare {concept} retain line is kept in every target line's context; full prompts are shared
    assert groups[0].retain == ("a star in gradient style", "a photo of a dog")
    assert groups[1].retain == ("a gradient ring", "a photo of a dog")
    assert all(g.paired for g in groups)


def test_a_builders_target_name_marks_the_concept_without_braces():
    groups = plan_groups(["a starry night in the style of Van Gogh", "a bridge"], ["Claude Monet"], [],
                         distractor_prompts=["a painting in the style of Claude Monet"], concept="van gogh")
    assert groups[0].distractors == ("a starry night in the style of Claude Monet",) and groups[0].paired
    # a line that does not name the concept trains against the builder's prompts, unpaired
    assert groups[1].distractors == ("a painting in the style of Claude Monet",) and not groups[1].paired


def test_unpaired_on_request_and_without_a_slot():
    lines = ["a star in {neon} style"]
    off = plan_groups(lines, ["a circle in pastel style"], ["{gradient}", "a dog"], paired=False)
    assert off[0].target == "a star in neon style" and off[0].distractors == ("a circle in pastel style",)
    assert off[0].retain == ("a dog",) and not off[0].paired
    plain = plan_groups(["a star in neon style"], ["a circle in pastel style"], [])
    assert plain[0].distractors == ("a circle in pastel style",) and not plain[0].paired


def test_the_concept_listed_as_its_own_distractor_is_refused():
    with pytest.raises(SurgUnError, match="'neon' being erased is also listed"):
        plan_groups(["a star in {neon} style"], ["pastel", "Neon"], [])
    with pytest.raises(SurgUnError, match="Remove 'neon'"):
        plan_groups(["a star in {neon} style"], ["pastel"], ["{neon}"])


def test_split_slot():
    assert split_slot("a {Van Gogh} sky") == ("a ", "Van Gogh", " sky")
    assert split_slot("no slot here") is None
    assert split_slot("Van Gogh's sky", concept="van gogh") == ("", "Van Gogh", "'s sky")


def test_several_concepts_each_with_their_own_distractors():
    groups = plan_groups(["a star in {neon} style", "a ring in {dots} style", "a {neon} cross"], ["pastel"], ["a dog"],
                         per_concept={"Neon": ["pastel", "grid"], "dots": ["wave"]})
    assert [g.concept for g in groups] == ["neon", "dots", "neon"]
    assert groups[0].distractors == ("a star in pastel style", "a star in grid style")
    assert groups[1].distractors == ("a ring in wave style",)
    assert groups[2].distractors == ("a pastel cross", "a grid cross")
    assert concepts_of(groups) == ["neon", "dots"]


def test_builder_names_mark_several_concepts_without_braces():
    groups = plan_groups(["a painting in the style of Van Gogh", "a painting in the style of Claude Monet"], ["Hokusai"], [],
                         concept=("Van Gogh", "Claude Monet"))
    assert [g.concept for g in groups] == ["Van Gogh", "Claude Monet"]
    assert groups[1].distractors == ("a painting in the style of Hokusai",)


@pytest.mark.parametrize("distractors, retain, per_concept", [
    (["dots", "pastel"], [], None),              # a shared distractor line is another concept being erased
    (["pastel"], ["{dots}"], None),              # retained as context
    (["pastel"], [], {"neon": ["DOTS"]}),        # in one concept's own set
])
def test_a_concept_among_anothers_distractors_is_refused_with_the_fix(distractors, retain, per_concept):
    with pytest.raises(SurgUnError, match="'dots' is erased in this run and also a distractor or retained concept of 'neon'"):
        plan_groups(["a star in {neon} style", "a ring in {dots} style"], distractors, retain, per_concept=per_concept)
