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


def test_uce_is_attacked_at_the_lambda_its_standing_row_shows_as_well_as_the_kinds_best():
    """UCE's row of "Where SurgUn stands" shows each target at its own best lambda; the attack phase attacked only at the
    kind's best (highest mean H over the kind's targets), so where the two differ (triangle: 100 against the objects'
    1.0) the row's recovery cells stayed empty and no command filled them."""
    from surgun_pack.benchmarks.toy_canvas.yardstick import attack_lrs, run_key

    def grid(method, target, lr, h):
        return {"phase": "grid", "method": method, "target": target, "kind": "object", "lr": lr, "seed": 0, "H": h}

    recs = [grid("uce", "object:square", 1.0, 1.0), grid("uce", "object:square", 100.0, 0.5),
            grid("uce", "object:triangle", 1.0, 0.96), grid("uce", "object:triangle", 100.0, 0.98),
            grid("esd_x", "object:square", 1e-3, 0.9), grid("esd_x", "object:triangle", 1e-3, 0.8),
            grid("esd_x", "object:triangle", 3e-3, 0.95)]
    done = {run_key(r): r for r in recs}
    assert attack_lrs(done, "object", "object:triangle", "uce") == [1.0, 100.0]
    assert attack_lrs(done, "object", "object:square", "uce") == [1.0]  # the same lambda: attacked once
    # a gradient method is attacked at its kind's best lr only (mean H 0.85 at 1e-3 against 0.95 at 3e-3)
    assert attack_lrs(done, "object", "object:square", "esd_x") == [3e-3]
    assert attack_lrs(done, "object", "object:square", "ga") == []  # no grid run yet: no attack
