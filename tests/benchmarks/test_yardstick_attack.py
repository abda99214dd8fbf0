"""The yardstick's soft-prompt attack on an edited model (benchmarks/toy_canvas/yardstick.py)."""


def test_soft_attack_goes_on_after_a_checkpoint_on_an_edited_model(comfy):
    """Sampling at a checkpoint re-applied the edit's patches in place as inference tensors and the
    next optimiser step failed ('Inference tensors cannot be saved for backward'): every attack whose
    references were not cached yet stopped the run. UCE's edit, checkpoints after 1 and 2 steps."""
    from surgun_pack.benchmarks.toy_canvas.yardstick import V2Settings, Yardstick

    y = Yardstick(V2Settings(attack_steps=(1, 2), attack_refs=1, attack_images=1), None)
    model, info = y.train("uce", "style", "neon", ("pastel", "gradient", "checker"), 0.01, 0)
    assert info["layers"] > 0
    res = y.soft_attack(model, "style", "neon")
    n = len(y.v2.attack_seeds) * 4  # 4 eval-half target prompts, 1 image each per attack seed
    assert res["soft_n_images"] == n
    assert all(0.0 <= res[k] <= 1.0 for k in ("soft@1", "soft@2"))
