"""The surgun_protect variant: the SurgUn Train node gets the algorithm's distractors with the target's
related concepts protected, and the held-out check covers that set too (benchmarks/toy_canvas/yardstick.py)."""


def test_protect_variant_trains_toward_no_related_concept(comfy):
    from surgun_pack.benchmarks.toy_canvas import split
    from surgun_pack.benchmarks.toy_canvas.methods_v2 import V2_METHODS
    from surgun_pack.benchmarks.toy_canvas.yardstick import V2Settings, Yardstick

    y = Yardstick(V2Settings(), None)
    kind, name = "object", "square"
    related = y.related(kind, name)
    u = {"distractors": y.choose_distractors(kind, name), "related": related}
    own = y.distractors_of("surgun_protect", kind, name, u)
    assert y.distractors_of("surgun", kind, name, u) == u["distractors"]["names"]
    assert len(own) == 3 and not set(own) & {name, *related}
    assert own == y.choose_distractors(kind, name, protected=related)["names"]  # the same algorithm, one input set
    graph = y.surgun_graph(V2_METHODS["surgun_protect"], kind, name, own, 1e-3, 0)
    lines = graph["tr"]["inputs"]["distractors"].splitlines()
    assert lines == own
    # the related concepts are kept by the retain term instead
    assert {"{" + r + "}" for r in related} <= set(graph["tr"]["inputs"]["retain_prompts"].splitlines())
    forms = [f for f in split.PARAPHRASE_FORMS[kind] if f != "concept_only"]  # ESD-x trains on it: never an attack
    y.check_held_out(kind, name, u["distractors"]["names"], related, forms)
