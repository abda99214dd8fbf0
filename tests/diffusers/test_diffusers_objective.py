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


@pytest.mark.parametrize("kind", ["eps", "v", "flow"])
def test_the_render_stops_sampler_predicts_the_sample_a_denoiser_knows_at_every_step(load, kind):
    """predict_clean (ascent_until_erased's renders): a denoiser that knows the clean sample ``c`` (its output at any
    input and level is the one that sample gives) is predicted ``c`` whichever step the render stops at; guidance is
    ``uncond + cfg (cond - uncond)`` on the output against the empty prompt, so with an oracle for ``c`` under the prompt
    and ``c2`` under the empty prompt the first step predicts ``c2 + cfg (c - c2)``; the levels run from the schedule's
    noisiest end, evenly spread, one denoiser call per step."""
    from surgun_diffusers.objective import Draw
    from surgun_diffusers.sampling import predict_clean

    pipe = _pipe(load, kind)
    schedule = NoiseSchedule.from_pipeline(pipe, detect_family(pipe))
    g = torch.Generator().manual_seed(3)
    c, c2, noise = (torch.randn(2, 4, 8, 8, generator=g) for _ in range(3))
    calls = []

    def level(t):
        if kind == "flow":
            sigma = t.float() / (schedule.T * schedule.timestep_scale)
            return 1 - sigma, sigma
        a = schedule.alphas_cumprod[t]
        return a.sqrt(), (1 - a).sqrt()

    def oracle(x, t, prompts):
        calls.append((t.tolist(), list(prompts), x.clone()))
        s, n = (v.view(-1, 1, 1, 1) for v in level(t))
        clean = torch.stack([c2[i % 2] if p == "" else c[i % 2] for i, p in enumerate(prompts)])
        eps = (x - s * clean) / n
        return {"eps": eps, "v": s * eps - n * clean, "flow": eps - clean}[kind]

    for last in (1, 3, 5):
        calls.clear()
        got = predict_clean(schedule, oracle, ["a cat", "a dog"], noise, steps=5, cfg=1.0, last_step=last)
        assert torch.allclose(got, c, atol=1e-3) and len(calls) == last and all("" not in ps for _, ps, _ in calls)
    # each step moves along the one path from the start's noise to c (DDIM's and Euler's with an exact denoiser)
    s0, n0 = (float(v[0]) for v in level(torch.tensor(calls[0][0])))
    eps0 = (noise - s0 * c) / n0
    for t, _, x in calls[1:]:
        s, n = (float(v[0]) for v in level(torch.tensor(t)))
        assert torch.allclose(x, s * c + n * eps0, atol=1e-3)
    first = schedule.at(torch.tensor([0.0]))
    assert float(level(torch.tensor(calls[0][0][:1]))[1]) == pytest.approx(float(first.noise[0]), rel=1e-4)  # the noisiest
    assert isinstance(first, Draw) and calls[-1][0][0] != calls[0][0][0]
    calls.clear()
    guided = predict_clean(schedule, oracle, ["a cat", "a dog"], noise, steps=5, cfg=3.0, last_step=1)
    assert calls[0][1] == ["a cat", "a dog", "", ""] and torch.allclose(guided, c2 + 3.0 * (c - c2), atol=1e-3)
