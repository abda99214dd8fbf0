"""The bridge between ComfyUI's objects (MODEL, CLIP, conditioning) and surgun_core.

* :class:`PromptBank` encodes each prompt once with the connected CLIP and turns it into the
  per-sample model conditioning ComfyUI's sampler would build (cross-attention context, SDXL's
  size vector, SD3's pooled vector, Flux's guidance...).
* :func:`sample_prompts` makes the training samples with the untouched model, through
  ComfyUI's own sampler, several prompts per batch.
* :func:`denoising_loss` is each family's native objective (eps, v or flow), computed through
  ``model.model.model_sampling`` as a weighted x0 error that equals the native MSE.
* :class:`TrainableDeltas` trains additive deltas on a clone of the model through ComfyUI's
  weight-wrapper mechanism, so the input model is never modified.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Callable, Sequence

import torch

from ..surgun_core.errors import SurgUnError
from ..surgun_core.train import ConceptData

log = logging.getLogger("SurgUn")


class PromptBank:
    """Prompt -> ComfyUI conditioning, and prompt lists -> batched model conds."""

    def __init__(self, clip, model_patcher, latent_shape: Sequence[int], device: torch.device):
        self.clip = clip
        self.model = model_patcher.model
        self.latent_shape = tuple(latent_shape)
        self.device = device
        self._conditioning: dict[str, list] = {}
        self._model_conds: dict[str, dict] = {}

    def conditioning(self, prompt: str) -> list:
        if prompt not in self._conditioning:
            tokens = self.clip.tokenize(prompt)
            self._conditioning[prompt] = self.clip.encode_from_tokens_scheduled(tokens)
        return self._conditioning[prompt]

    def model_conds(self, prompt: str) -> dict:
        """The processed model conds for one sample of ``prompt`` (batch size 1)."""
        if prompt not in self._model_conds:
            import comfy.sampler_helpers
            import comfy.samplers

            conds = comfy.sampler_helpers.convert_cond(self.conditioning(prompt))
            noise = torch.zeros((1, *self.latent_shape), device=self.device)
            conds = comfy.samplers.encode_model_conds(self.model.extra_conds, conds, noise, self.device, "positive")
            first = conds[0]["model_conds"]
            self._model_conds[prompt] = {k: v.process_cond(batch_size=1, area=None) for k, v in first.items()}
        return self._model_conds[prompt]

    def batch(self, prompts: Sequence[str]) -> dict:
        """Keyword arguments for ``BaseModel.apply_model`` with one prompt per sample."""
        import comfy.samplers

        conds = [self.model_conds(p) for p in prompts]
        first = conds[0]
        for p, c in zip(prompts, conds):
            if not all(c[k].can_concat(first[k]) for k in first):
                raise SurgUnError(
                    f"[SurgUn] the prompt {p!r} encodes to a different length than {prompts[0]!r} "
                    "(over 75 tokens?). Shorten long prompts so all prompts fit one CLIP window."
                )
        out = comfy.samplers.cond_cat(conds)
        return {k: (v.to(self.device) if hasattr(v, "to") else v) for k, v in out.items()}


def latent_shape_for(model_patcher, size: int) -> tuple[int, int, int]:
    """(channels, height, width) of the latent for a square image of ``size`` pixels."""
    fmt = model_patcher.model.latent_format
    ratio = getattr(fmt, "spacial_downscale_ratio", 8)
    side = max(1, size // ratio)
    return (fmt.latent_channels, side, side)


def _batchable(conds: list) -> bool:
    """Whether single-prompt conditionings can be stacked into one batch."""
    first_c, first_x = conds[0][0]
    for c, x in (cond[0] for cond in conds):
        if c.shape[1:] != first_c.shape[1:] or x.keys() != first_x.keys():
            return False
        for k, v in x.items():
            w = first_x[k]
            if torch.is_tensor(v) != torch.is_tensor(w) or (torch.is_tensor(v) and v.shape[1:] != w.shape[1:]) or (not torch.is_tensor(v) and v != w):
                return False
    return all(len(cond) == 1 for cond in conds)


def _stack(conds: list, count: int) -> list:
    """[[cond, extras]] per prompt -> one conditioning with ``count`` rows per prompt, in order."""
    c = torch.cat([cond[0][0].repeat(count, *([1] * (cond[0][0].ndim - 1))) for cond in conds])
    extras = {}
    for k, v in conds[0][0][1].items():
        extras[k] = torch.cat([cond[0][1][k].repeat(count, *([1] * (v.ndim - 1))) for cond in conds]) if torch.is_tensor(v) else v
    return [[c, extras]]


def plan_batches(bank: PromptBank, prompts: Sequence[str], count: int, max_batch: int = 16) -> list[list[str]]:
    """Group the distinct prompts into sampler batches of at most ``max_batch`` images, keeping
    together only prompts whose conditionings stack (same token length and extras)."""
    per_batch = max(1, max_batch // max(1, count))
    batches: list[list[str]] = []
    for p in dict.fromkeys(prompts):
        if batches and len(batches[-1]) < per_batch and _batchable([bank.conditioning(q) for q in (*batches[-1], p)]):
            batches[-1].append(p)
        else:
            batches.append([p])
    return batches


def sample_prompts(
    model_patcher,
    bank: PromptBank,
    batches: list[list[str]],
    count: int,
    steps: int,
    cfg: float,
    seed: int,
    sampler: str,
    scheduler: str,
    on_step: Callable[[], None] | None = None,
) -> dict[str, torch.Tensor]:
    """``count`` samples of each prompt of ``batches`` (see :func:`plan_batches`), as KSampler
    returns them. Batch ``i`` uses noise seed ``seed + i``: the same call gives the same samples."""
    import comfy.sample

    negative = bank.conditioning("")

    def callback(step, x0, x, total):
        if on_step is not None:
            on_step()

    out: dict[str, torch.Tensor] = {}
    for i, batch in enumerate(batches):
        latent = torch.zeros((count * len(batch), *bank.latent_shape))
        noise = comfy.sample.prepare_noise(latent, seed + i)
        positive = _stack([bank.conditioning(p) for p in batch], count)
        result = comfy.sample.sample(model_patcher, noise, steps, cfg, sampler, scheduler, positive, negative, latent,
                                     seed=seed + i, callback=callback, disable_pbar=True)
        for j, p in enumerate(batch):
            out[p] = result[j * count:(j + 1) * count]
    return out


def decode_images(vae, latents: torch.Tensor) -> torch.Tensor:
    """Latents (as KSampler returns them) -> IMAGE ``[N, H, W, 3]`` in 0..1 on CPU."""
    images = vae.decode(latents)
    if images.ndim == 5:  # some VAEs return a time axis
        images = images.reshape(-1, *images.shape[-3:])
    return images.float().clamp(0, 1).cpu()


def image_embedder(clip_vision):
    """(embed(images) -> [N, D], name): CLIP-vision image embeddings, or the pixel fallback."""
    from ..surgun_core.scores import PIXEL_FALLBACK, pixel_embed

    if clip_vision is None:
        return pixel_embed, PIXEL_FALLBACK

    def embed(images: torch.Tensor) -> torch.Tensor:
        out = clip_vision.encode_image(images)
        e = getattr(out, "image_embeds", None)
        if e is None:
            e = out["image_embeds"]
        return e.float().cpu()

    return embed, "CLIP vision image embeddings"


def objective_weight(model_sampling, sigma: torch.Tensor) -> torch.Tensor:
    """Per-sample weight that turns ``|x0_hat - x0|^2`` into the native MSE.

    eps: ``x0_hat - x0 = sigma (eps - eps_hat)``            -> ``1 / sigma^2``
    v:   ``x0_hat - x0 = (v - v_hat) s sd / sqrt(s^2+sd^2)`` -> ``(s^2 + sd^2) / (s^2 sd^2)``
    flow (CONST): ``x0_hat - x0 = sigma (v - v_hat)``       -> ``1 / sigma^2``
    """
    import comfy.model_sampling as ms

    if isinstance(model_sampling, ms.V_PREDICTION):
        sd = float(model_sampling.sigma_data)
        return (sigma**2 + sd**2) / (sigma**2 * sd**2)
    if isinstance(model_sampling, (ms.EPS, ms.CONST)):
        return 1.0 / sigma**2
    raise SurgUnError(f"[SurgUn] no training objective for prediction type {type(model_sampling).__name__}.")


def draw_sigmas(model_sampling, count: int, generator: torch.Generator) -> torch.Tensor:
    """Uniform training timesteps (as percent of the schedule), mapped to sigmas."""
    u = torch.rand(count, generator=generator) * 0.998 + 0.001
    return torch.tensor([float(model_sampling.percent_to_sigma(float(p))) for p in u], dtype=torch.float32)


def denoising_loss(model_patcher, bank: PromptBank, x0: torch.Tensor, prompts: Sequence[str], generator: torch.Generator) -> torch.Tensor:
    """Per-sample native denoising loss of clean latents ``x0`` (model space) under ``prompts``."""
    base = model_patcher.model
    ms = base.model_sampling
    device = bank.device
    sigma = draw_sigmas(ms, x0.shape[0], generator).to(device)
    noise = torch.randn(x0.shape, generator=generator).to(device=device, dtype=x0.dtype)
    x0 = x0.to(device)
    xt = ms.noise_scaling(sigma, noise, x0)
    x0_hat = base.apply_model(xt, sigma, **bank.batch(prompts))
    err = (x0_hat.float() - x0.float()).pow(2).flatten(1).mean(1)
    return err * objective_weight(ms, sigma)


def esd_loss(deltas: "TrainableDeltas", bank: PromptBank, x0: torch.Tensor, prompts: Sequence[str],
             generator: torch.Generator, eta: float = 1.0) -> torch.Tensor:
    """ESD's negative-guidance regression, per sample, with the family's native weighting.

    The frozen model's guided prediction ``x0(empty) - eta * (x0(c) - x0(empty))`` is the
    target of the trained model's ``x0(c)`` at the same noisy input.
    """
    base = deltas.work.model
    ms = base.model_sampling
    device = bank.device
    sigma = draw_sigmas(ms, x0.shape[0], generator).to(device)
    noise = torch.randn(x0.shape, generator=generator).to(device=device, dtype=x0.dtype)
    xt = ms.noise_scaling(sigma, noise, x0.to(device))
    with deltas.original():
        cond = base.apply_model(xt, sigma, **bank.batch(prompts)).float()
        uncond = base.apply_model(xt, sigma, **bank.batch([""] * len(prompts))).float()
        target = uncond - eta * (cond - uncond)
    pred = base.apply_model(xt, sigma, **bank.batch(prompts)).float()
    return (pred - target).pow(2).flatten(1).mean(1) * objective_weight(ms, sigma)


class DeltaAdapter(torch.nn.Module):
    """A ComfyUI weight wrapper: ``W -> W + delta`` with a trainable fp32 ``delta``."""

    def __init__(self, delta: torch.Tensor):
        super().__init__()
        self.delta = delta
        self.active = True

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return weight
        return weight + self.delta.to(device=weight.device, dtype=weight.dtype)


def _swap_inference_tensors(root: torch.nn.Module) -> list:
    """Replace inference-mode parameters/buffers with normal clones (autograd cannot save them)."""
    swapped = []
    for module in root.modules():
        for store in (module._parameters, module._buffers):
            for name, t in list(store.items()):
                if t is not None and t.is_inference():
                    swapped.append((store, name, t))
                    clone = t.clone()
                    store[name] = torch.nn.Parameter(clone, requires_grad=False) if isinstance(t, torch.nn.Parameter) else clone
    return swapped


def _checkpointed(forward):
    """Run ``forward`` under gradient checkpointing, on clones of its tensor inputs.

    Blocks such as Flux's add into their inputs in place; the recomputation during backward
    must see the original inputs, so each call works on its own copies.
    """
    import torch.utils.checkpoint

    def fn(*args, **kwargs):
        args = tuple(a.clone() if torch.is_tensor(a) else a for a in args)
        kwargs = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in kwargs.items()}
        return forward(*args, **kwargs)

    def run(*args, **kwargs):
        return torch.utils.checkpoint.checkpoint(fn, *args, use_reentrant=False, **kwargs)

    return run


class TrainableDeltas(contextlib.AbstractContextManager):
    """Additive deltas on selected layers of a *clone* of ``model_patcher``, ready for autograd.

    Inside the ``with`` block the clone is loaded and ``self.deltas[name]`` are leaf tensors
    (fp32, zeros, ``requires_grad``) added to the weight of each named layer of the diffusion
    network. On exit every temporary change to the shared network is undone: the adapters leave
    the layers and original parameter objects are put back, so the input MODEL is bit-identical.
    Must run with ``torch.inference_mode(False)``.
    """

    def __init__(self, model_patcher, module_names: Sequence[str], checkpoint_units: str | None = None):
        import comfy.utils

        if model_patcher.is_dynamic():
            try:
                self.work = model_patcher.clone(disable_dynamic=True)
            except RuntimeError as e:
                raise SurgUnError(
                    f"[SurgUn] training needs a non-dynamic copy of this model and ComfyUI could not make one ({e}). "
                    "Load the model with a stock loader node, or start ComfyUI with --disable-dynamic-vram."
                ) from None
        else:
            self.work = model_patcher.clone()
        self.names = list(module_names)
        self.deltas: dict[str, torch.Tensor] = {}
        self._adapters: dict[str, DeltaAdapter] = {}
        for name in self.names:
            key = f"diffusion_model.{name}.weight"
            weight = comfy.utils.get_attr(self.work.model, key)
            delta = torch.zeros(weight.shape, dtype=torch.float32, device=self.work.load_device, requires_grad=True)
            self.deltas[name] = delta
            self._adapters[name] = DeltaAdapter(delta)
            self.work.add_weight_wrapper(key, self._adapters[name])
        self._swapped: list = []
        self._was_training = False
        self.checkpoint_units = checkpoint_units
        self._checkpointed: list[torch.nn.Module] = []

    def __enter__(self):
        import comfy.model_management

        if torch.is_inference_mode_enabled():
            raise RuntimeError("TrainableDeltas must be entered under torch.inference_mode(False)")
        comfy.model_management.load_models_gpu([self.work], force_full_load=True)
        # ComfyUI's switch for differentiable code paths (e.g. Flux's rope has a fused op without autograd)
        self._was_training = comfy.model_management.in_training
        comfy.model_management.in_training = True
        net = self.work.model.diffusion_model
        self._swapped = _swap_inference_tensors(net)
        for p in net.parameters():
            p.requires_grad_(False)
        if self.checkpoint_units:
            import re

            rx = re.compile(self.checkpoint_units)
            for name, module in net.named_modules():
                if rx.fullmatch(name):
                    module.forward = _checkpointed(module.forward)
                    self._checkpointed.append(module)
        return self

    def __exit__(self, *exc):
        import comfy.model_management
        import comfy.utils

        comfy.model_management.in_training = self._was_training
        for module in self._checkpointed:
            del module.forward  # drop the instance attribute: the class's forward is back
        self._checkpointed = []
        for store, name, original in reversed(self._swapped):
            store[name] = original
        self._swapped = []
        for name, adapter in self._adapters.items():
            module = comfy.utils.get_attr(self.work.model, f"diffusion_model.{name}")
            fns = getattr(module, "weight_function", None)
            if fns:
                module.weight_function = [f for f in fns if f is not adapter]
        return False

    @contextlib.contextmanager
    def original(self):
        """Inside: the clone computes with the original weights (adapters off), without gradients."""
        for a in self._adapters.values():
            a.active = False
        try:
            with torch.no_grad():
                yield
        finally:
            for a in self._adapters.values():
                a.active = True

    def detached(self, dtype_like: bool = True) -> dict[str, torch.Tensor]:
        """The trained deltas, detached, on CPU, in each layer's weight dtype."""
        import comfy.utils

        out = {}
        for name, d in self.deltas.items():
            w = comfy.utils.get_attr(self.work.model, f"diffusion_model.{name}.weight")
            out[name] = d.detach().to(device="cpu", dtype=w.dtype if dtype_like else d.dtype).contiguous()
        return out


def _normal(t: torch.Tensor) -> torch.Tensor:
    """A tensor usable by autograd (inference tensors are not)."""
    return t.clone() if t.is_inference() else t


def train_deltas(
    model_patcher,
    bank: PromptBank,
    samples: ConceptData | Sequence[ConceptData],
    modules: Sequence[str],
    config,
    checkpoint_units: str | None = None,
    on_step=None,
    loss: str = "denoise",
    esd_eta: float = 1.0,
):
    """Train additive deltas on ``modules`` of a clone of ``model_patcher``.

    ``samples`` holds latents as ComfyUI's sampler returns them (they are moved to the
    model's space here); several groups may be given (see ``train_competition``). ``loss`` is the native denoising objective or ESD's regression.
    Returns ``(deltas by module name, TrainResult)``; the input model is untouched.
    """
    from ..surgun_core.train import train_competition

    device = bank.device
    with torch.inference_mode(False):
        with TrainableDeltas(model_patcher, modules, checkpoint_units) as td:
            process_in = td.work.model.process_latent_in
            to_model = lambda x: _normal(process_in(_normal(x.to(device))))  # noqa: E731
            groups = [samples] if isinstance(samples, ConceptData) else list(samples)
            data = [
                ConceptData(s.target_prompt, to_model(s.target), {k: to_model(v) for k, v in s.distractors.items()},
                            {k: to_model(v) for k, v in s.retain.items()})
                for s in groups
            ]
            if loss == "esd":
                fn = lambda x0, ps, g: esd_loss(td, bank, x0, ps, g, esd_eta)  # noqa: E731
            elif loss == "denoise":
                fn = lambda x0, ps, g: denoising_loss(td.work, bank, x0, ps, g)  # noqa: E731
            else:
                raise SurgUnError(f"[SurgUn] unknown training loss {loss!r}.")
            result = train_competition(list(td.deltas.values()), data, fn, config, on_step)
            return td.detached(), result
