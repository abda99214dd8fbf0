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
