"""The loss is each family's native training objective (eps, v, flow), exactly."""

import pytest
import torch

from surgun_graphs import FAMILIES
from surgun_pack.surgun_comfy import families
from surgun_pack.surgun_comfy.losses import denoising_loss, draw_sigmas
from surgun_pack.surgun_comfy.prompts import PromptBank
from surgun_pack.surgun_comfy.render import latent_shape_for

NATIVE = {"sd1": "eps", "sd2v": "v", "sdxl": "eps", "sd3": "flow", "flux": "flow"}


@pytest.mark.parametrize("family", FAMILIES)
def test_denoising_loss_equals_native_mse(comfy, tiny, family):
    from comfy.model_management import load_models_gpu

    with torch.inference_mode():
        mp, clip = tiny.build_model(family), tiny.build_clip()
        assert families.detect_family(mp).prediction == NATIVE[family]
        load_models_gpu([mp])
        shape = latent_shape_for(mp, 64)
        bank = PromptBank(clip, mp, shape, torch.device("cpu"))
        x0 = torch.randn((4, *shape), generator=torch.Generator().manual_seed(1))
        g = torch.Generator().manual_seed(0)
        replay = torch.Generator()
        replay.set_state(g.get_state())
        raw = []
        hook = mp.model.diffusion_model.register_forward_hook(lambda m, i, o: raw.append(o.float()))
        try:
            ours = denoising_loss(mp, bank, x0, ["a cat", "a dog", "a cat", "a tree"], g)
        finally:
            hook.remove()

    # replay the same draws and compute the textbook target of the family
    sigma = draw_sigmas(mp.model.model_sampling, 4, replay)
    noise = torch.randn(x0.shape, generator=replay)
    s = sigma.view(-1, 1, 1, 1)
    if NATIVE[family] == "eps":
        target = noise
    elif NATIVE[family] == "v":  # v = alpha * eps - sigma_t * x0 with alpha = 1/sqrt(1+s^2), sigma_t = s/sqrt(1+s^2)
        target = (noise - s * x0) / torch.sqrt(1 + s**2)
    else:  # rectified flow: velocity = noise - x0
        target = noise - x0
    native = (raw[0] - target).pow(2).flatten(1).mean(1)
    assert len(raw) == 1
    assert torch.allclose(ours, native, rtol=1e-4, atol=1e-6), (ours, native)
    assert (sigma.max() / sigma.min()) > 1.5  # a spread of timesteps, not one


def test_model_targets_regress_onto_the_untouched_prediction_under_the_teacher_prompt(comfy, tiny):
    """A row with a teacher prompt learns the untouched model's prediction under it at the same noisy input
    (0 when the teacher is its own prompt and nothing is trained yet); a row without one keeps its sample;
    the deltas get a gradient."""
    from surgun_pack.surgun_comfy.deltas import TrainableDeltas
    from surgun_pack.surgun_comfy.losses import denoising, noisy_input, weighted_error

    with torch.inference_mode():
        mp, clip = tiny.build_model("sd1"), tiny.build_clip()
        shape = latent_shape_for(mp, 32)
        bank = PromptBank(clip, mp, shape, torch.device("cpu"))
    modules = [n for n, _ in mp.model.diffusion_model.named_modules() if n.endswith(("attn2.to_k", "attn2.to_v"))]
    prompts, x = ["a cat", "a dog", "a tree"], torch.randn((3, *shape), generator=torch.Generator().manual_seed(1))
    g = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    with torch.inference_mode(False), TrainableDeltas(mp, modules) as td:
        loss = denoising(td, bank)
        x0 = mp.model.process_latent_in(x.clone()).clone()
        assert torch.equal(loss(x0, prompts, g(), teachers=prompts), torch.zeros(3))
        with torch.no_grad():
            for d in td.deltas.values():
                d.add_(0.05 * torch.randn(d.shape, generator=torch.Generator().manual_seed(2)))
        taught = loss(x0, prompts, g(), teachers=[None, "a tree", "a tree"])
        ms = mp.get_model_object("model_sampling")
        sigma, xt, _ = noisy_input(ms, x0, g(), bank.device)
        with torch.no_grad():
            trained = mp.model.apply_model(xt, sigma, **bank.batch(prompts))
            with td.original():
                frozen = mp.model.apply_model(xt, sigma, **bank.batch(["a cat", "a tree", "a tree"]))
        plain = weighted_error(ms, trained, x0, sigma)
        want = weighted_error(ms, trained, frozen, sigma)
        assert taught[0].item() == pytest.approx(plain[0].item(), rel=1e-4)
        assert taught[1:].tolist() == pytest.approx(want[1:].tolist(), rel=1e-4)
        assert taught[2].item() > 0 and taught[1].item() != pytest.approx(plain[1].item(), rel=1e-2)
        taught.sum().backward()
        assert all(d.grad is not None and torch.isfinite(d.grad).all() and d.grad.abs().sum() > 0 for d in td.deltas.values())


def test_given_levels_replace_the_draw_and_nan_keeps_it(comfy, tiny):
    """``percents`` (concept_levels) sets a row's noise level through the family's own schedule; a NaN row
    keeps exactly the level it would have drawn, and the noise after it is the same."""
    mp = tiny.build_model("sd1")
    ms = mp.model.model_sampling
    plain = draw_sigmas(ms, 3, torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(5)
    given = draw_sigmas(ms, 3, g, torch.tensor([0.05, float("nan"), 0.9]))
    assert float(given[0]) == pytest.approx(float(ms.percent_to_sigma(0.05)))
    assert float(given[2]) == pytest.approx(float(ms.percent_to_sigma(0.9)))
    assert float(given[1]) == float(plain[1])
    g2 = torch.Generator().manual_seed(5)
    draw_sigmas(ms, 3, g2)
    assert torch.equal(torch.randn(4, generator=g), torch.randn(4, generator=g2))


@pytest.mark.parametrize("family", ["sd1", "flux"])
def test_noise_rows_give_a_row_another_rows_noise_and_level(comfy, tiny, family):
    """``noise_rows`` (shared_noise): a row that takes row 0's noise and level has row 0's loss when its sample and
    prompt are row 0's; drawn on its own it has another. The draws are made either way, so the rows that keep their
    own (the retain rows) see the same noise as without it."""
    from comfy.model_management import load_models_gpu

    with torch.inference_mode():
        mp, clip = tiny.build_model(family), tiny.build_clip()
        load_models_gpu([mp])
        shape = latent_shape_for(mp, 64)
        bank = PromptBank(clip, mp, shape, torch.device("cpu"))
        x0 = torch.randn((1, *shape), generator=torch.Generator().manual_seed(1)).repeat(3, 1, 1, 1)
        prompts = ["a cat", "a cat", "a cat"]
        shared = denoising_loss(mp, bank, x0, prompts, torch.Generator().manual_seed(0), noise_rows=[0, 0, 2])
        own = denoising_loss(mp, bank, x0, prompts, torch.Generator().manual_seed(0))
    assert float(shared[1]) == pytest.approx(float(shared[0]), rel=1e-4)
    assert float(own[1]) != pytest.approx(float(own[0]), rel=1e-2)
    assert shared[[0, 2]].tolist() == pytest.approx(own[[0, 2]].tolist(), rel=1e-4)
