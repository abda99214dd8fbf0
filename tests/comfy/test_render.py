"""Batched self-sampling: each prompt's rows are that prompt's samples."""

import torch

from surgun_pack.surgun_comfy.prompts import PromptBank, plan_batches
from surgun_pack.surgun_comfy.render import latent_shape_for, sample_prompts


def test_batched_samples_match_single_prompt_sampling(comfy, tiny):
    with torch.inference_mode():
        mp, clip = tiny.build_model("sdxl"), tiny.build_clip()
        bank = PromptBank(clip, mp, latent_shape_for(mp, 32), torch.device("cpu"))
        prompts = ["a painting by zorblax", "a photo of a dog", "a city street"]
        plan = plan_batches(bank, prompts, count=2)
        assert plan == [prompts]  # short prompts stack into one batch
        batched = sample_prompts(mp, bank, plan, 2, 3, 3.0, 5, "euler", "normal")
        alone = sample_prompts(mp, bank, [["a painting by zorblax"]], 2, 3, 3.0, 5, "euler", "normal")
    # the first prompt's rows see the same noise as when it is sampled alone
    assert torch.allclose(batched["a painting by zorblax"], alone["a painting by zorblax"], atol=1e-5)
    assert not torch.allclose(batched["a photo of a dog"], alone["a painting by zorblax"], atol=1e-3)
    assert [batched[p].shape[0] for p in prompts] == [2, 2, 2]


def test_prompts_that_do_not_stack_get_their_own_batch(comfy, tiny):
    long_prompt = " ".join(["zorblax"] * 100)  # two CLIP windows: a longer conditioning
    with torch.inference_mode():
        mp, clip = tiny.build_model("sd1"), tiny.build_clip()
        bank = PromptBank(clip, mp, latent_shape_for(mp, 32), torch.device("cpu"))
        assert plan_batches(bank, ["a", "b", long_prompt, "c"], count=2) == [["a", "b"], [long_prompt], ["c"]]
        assert plan_batches(bank, [f"p{i}" for i in range(10)], count=4, max_batch=8) == [
            ["p0", "p1"], ["p2", "p3"], ["p4", "p5"], ["p6", "p7"], ["p8", "p9"]]


def test_with_shared_noise_every_prompt_starts_from_the_same_noises_whatever_it_is_batched_with(comfy, tiny):
    """shared_noise: sample k of every prompt starts from the same noise, so a prompt's samples are the ones it
    gets when sampled alone, in any batch of the plan; without it, a prompt's noise depends on its place."""
    prompts = ["a painting by zorblax", "a photo of a dog", "a city street"]
    with torch.inference_mode():
        mp, clip = tiny.build_model("sd1"), tiny.build_clip()
        bank = PromptBank(clip, mp, latent_shape_for(mp, 32), torch.device("cpu"))
        plans = {"one batch": [prompts], "two batches": [prompts[:1], prompts[1:]]}
        shared = {k: sample_prompts(mp, bank, plan, 2, 3, 3.0, 5, "euler", "normal", shared_noise=True) for k, plan in plans.items()}
        alone = {p: sample_prompts(mp, bank, [[p]], 2, 3, 3.0, 5, "euler", "normal", shared_noise=True)[p] for p in prompts}
        own = sample_prompts(mp, bank, [prompts], 2, 3, 3.0, 5, "euler", "normal")
    for got in shared.values():
        for p in prompts:
            assert torch.allclose(got[p], alone[p], atol=1e-5), p
    assert not torch.allclose(own["a city street"], alone["a city street"], atol=1e-3)


def test_stopped_at_a_step_each_row_is_the_samplers_prediction_of_the_finished_image_there(comfy, tiny):
    """last_step: the sampler runs its first steps only and returns its prediction of the finished image there, in
    the finished samples' latent space: at the last step that is the finished sample, earlier it is not."""
    prompts = ["a painting by zorblax", "a photo of a dog"]
    with torch.inference_mode():
        mp, clip = tiny.build_model("sd1"), tiny.build_clip()
        bank = PromptBank(clip, mp, latent_shape_for(mp, 32), torch.device("cpu"))
        done = sample_prompts(mp, bank, [prompts], 2, 4, 3.0, 5, "euler", "normal", shared_noise=True)
        at_end = sample_prompts(mp, bank, [prompts], 2, 4, 3.0, 5, "euler", "normal", shared_noise=True, last_step=4)
        early = sample_prompts(mp, bank, [prompts], 2, 4, 3.0, 5, "euler", "normal", shared_noise=True, last_step=1)
    for p in prompts:
        assert torch.allclose(at_end[p], done[p], atol=1e-4) and at_end[p].shape == done[p].shape
        assert torch.isfinite(early[p]).all() and not torch.allclose(early[p], done[p], atol=1e-3)
