"""Each family's native loss equals the scheduler's own training target, numerically."""

import pytest
import torch

from surgun_core.errors import SurgUnError
from surgun_diffusers.conditioning import Denoiser, PromptEncoder
from surgun_diffusers.families import detect_family
from surgun_diffusers.objective import NoiseSchedule, denoising_loss

PROMPTS = ["a painting of a cat", "a photo of a dog", "a painting of a cat", "a tree"]


def _pipe(load, kind):
    if kind == "flow":
        return load("sana")
    pipe = load("sd1")
    if kind == "v":
        from diffusers import EulerDiscreteScheduler

        pipe.scheduler = EulerDiscreteScheduler.from_config(pipe.scheduler.config, prediction_type="v_prediction")
    return pipe


@pytest.mark.parametrize("kind", ["eps", "v", "flow"])
def test_native_loss_equals_the_schedulers_training_target(load, kind):
    pipe = _pipe(load, kind)
    family = detect_family(pipe)
    assert family.prediction == kind
    schedule = NoiseSchedule.from_pipeline(pipe, family)
    denoise = Denoiser(pipe, family, PromptEncoder(pipe, family))
    seen = []

    def recording(xt, t, prompts):
        out = denoise(xt, t, prompts)
        seen.append((xt.detach().clone(), t.detach().clone(), out.detach().float().clone()))
        return out

    shape = (4, 4, 16, 16) if kind == "flow" else (4, 4, 8, 8)
    x0 = torch.randn(shape, generator=torch.Generator().manual_seed(1))
    g = torch.Generator().manual_seed(0)
    replay = torch.Generator()
    replay.set_state(g.get_state())
    with torch.no_grad():
        ours = denoising_loss(schedule, recording, x0, PROMPTS, g)
    (xt, t_model, out), = seen

    if kind == "flow":
        from diffusers import FlowMatchEulerDiscreteScheduler

        sched = FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=float(pipe.scheduler.config.shift))
        idx = torch.randint(0, 1000, (4,), generator=replay)
        noise = torch.randn(x0.shape, generator=replay)
        timesteps = sched.timesteps[idx]
        assert torch.equal(t_model, timesteps)  # the transformer sees 1000 * sigma, as in SanaPipeline
        assert torch.allclose(xt, sched.scale_noise(x0, timesteps, noise), atol=1e-6)
        target = noise - x0  # flow matching's velocity
    else:
        from diffusers import DDPMScheduler

        sched = DDPMScheduler.from_config(pipe.scheduler.config)
        t = torch.randint(0, sched.config.num_train_timesteps, (4,), generator=replay)
        noise = torch.randn(x0.shape, generator=replay)
        assert torch.equal(t_model, t)
        assert torch.allclose(xt, sched.add_noise(x0, noise, t), atol=1e-6)
        target = noise if kind == "eps" else sched.get_velocity(x0, noise, t)
    native = (out - target).pow(2).flatten(1).mean(1)
    assert torch.allclose(ours, native, rtol=1e-5, atol=1e-7), (ours, native)
    assert float(t_model.max() / t_model.min().clamp(min=1)) > 1.5  # a spread of noise levels, not one


def test_families_are_detected_from_the_pipeline_objects(load):
    assert [(f.id, f.prediction, f.in_comfyui) for f in (detect_family(load(n)) for n in ("sd1", "sdxl", "sana"))] == [
        ("sd1", "eps", True), ("sdxl", "eps", True), ("sana", "flow", False)]


def test_an_unsupported_pipeline_is_refused_with_the_supported_list():
    class Other:
        transformer = torch.nn.Linear(2, 2)

    with pytest.raises(SurgUnError, match=r"not supported: Other \(Linear\).*SD1\.x.*SANA"):
        detect_family(Other())


@pytest.mark.parametrize("kind", ["eps", "flow"])
def test_noise_rows_give_a_row_another_rows_timestep_and_noise(load, kind):
    """``noise_rows`` (shared_noise): a row that takes row 0's timestep and noise has row 0's loss when its latent
    and prompt are row 0's; drawn on its own it has another; a row that keeps its own sees the same draw as without."""
    pipe = _pipe(load, kind)
    family = detect_family(pipe)
    schedule = NoiseSchedule.from_pipeline(pipe, family)
    denoise = Denoiser(pipe, family, PromptEncoder(pipe, family))
    shape = (1, 4, 16, 16) if kind == "flow" else (1, 4, 8, 8)
    x0 = torch.randn(shape, generator=torch.Generator().manual_seed(1)).repeat(3, 1, 1, 1)
    prompts = ["a painting of a cat"] * 3
    with torch.no_grad():
        shared = denoising_loss(schedule, denoise, x0, prompts, torch.Generator().manual_seed(0), noise_rows=[0, 0, 2])
        own = denoising_loss(schedule, denoise, x0, prompts, torch.Generator().manual_seed(0))
    assert float(shared[1]) == pytest.approx(float(shared[0]), rel=1e-4)
    assert float(own[1]) != pytest.approx(float(own[0]), rel=1e-2)
    assert shared[[0, 2]].tolist() == pytest.approx(own[[0, 2]].tolist(), rel=1e-4)


@pytest.mark.parametrize("kind", ["eps", "flow"])
def test_percents_fix_a_rows_noise_level_counted_from_the_noisiest_end(load, kind):
    """The ascent guard's probe levels: percent 0 is the training schedule's noisiest step, 1 its cleanest, 0.5 the
    middle step; NaN keeps the row's draw, and the generator's stream is the same either way (so is the noise after)."""
    pipe = _pipe(load, kind)
    schedule = NoiseSchedule.from_pipeline(pipe, detect_family(pipe))
    noise_levels = schedule.flow_sigmas if kind == "flow" else (1.0 - schedule.alphas_cumprod).sqrt()
    ordered = noise_levels.sort(descending=True).values
    g_drawn, g_fixed = torch.Generator().manual_seed(0), torch.Generator().manual_seed(0)
    drawn = schedule.draw(4, g_drawn)
    fixed = schedule.draw(4, g_fixed, torch.tensor([0.0, float("nan"), 1.0, 0.5]))
    assert float(fixed.noise[0]) == pytest.approx(float(ordered[0]))
    assert float(fixed.noise[2]) == pytest.approx(float(ordered[-1]))
    assert float(fixed.noise[3]) == pytest.approx(float(ordered[round(0.5 * (len(ordered) - 1))]))
    assert float(fixed.noise[1]) == float(drawn.noise[1]) and float(fixed.timestep[1]) == float(drawn.timestep[1])
    assert torch.equal(torch.randn(3, generator=g_drawn), torch.randn(3, generator=g_fixed))
