"""Training additive deltas on a ComfyUI MODEL with the core's loop."""

from __future__ import annotations

import dataclasses
from typing import Sequence

import torch

from ..surgun_core.train import ConceptData, OnSetup, OnStep, TrainConfig, TrainResult, train_competition
from .deltas import TrainableDeltas
from .drawn import DrawnProbe
from .losses import LossFactory, denoising
from .prompts import PromptBank


def _normal(t: torch.Tensor) -> torch.Tensor:
    """A tensor usable by autograd (inference tensors are not)."""
    return t.clone() if t.is_inference() else t


def train_deltas(
    model_patcher,
    bank: PromptBank,
    samples: ConceptData | Sequence[ConceptData],
    modules: Sequence[str],
    config: TrainConfig,
    checkpoint_units: str | None = None,
    on_step: OnStep | None = None,
    loss: LossFactory = denoising,
    on_setup: OnSetup | None = None,
    input_bases: Sequence[torch.Tensor | None] | None = None,
    drawn: DrawnProbe | None = None,
) -> tuple[dict[str, torch.Tensor], TrainResult]:
    """Train additive deltas on ``modules`` of a clone of ``model_patcher``.

    ``samples`` holds latents as ComfyUI's sampler returns them (they are moved to the model's
    space here); several groups may be given (see ``train_competition``). ``loss`` builds the
    per-sample loss for the model being trained (SurgUn's native denoising loss by default).
    ``input_bases`` (one per module, or None) confine each delta to inputs in its basis' span.
    ``drawn`` renders the target on the clone as it trains (``TrainConfig.ascent_until_erased``).
    Returns ``(deltas by module name, TrainResult)``; the input model is untouched.
    """
    device = bank.device
    with torch.inference_mode(False):
        with TrainableDeltas(model_patcher, modules, checkpoint_units) as td:
            process_in = td.work.model.process_latent_in
            to_model = lambda x: _normal(process_in(_normal(x.to(device))))  # noqa: E731
            groups = [samples] if isinstance(samples, ConceptData) else list(samples)
            data = [
                dataclasses.replace(s, target=to_model(s.target), distractors={k: to_model(v) for k, v in s.distractors.items()},
                                    retain={k: to_model(v) for k, v in s.retain.items()})  # every other field as given
                for s in groups
            ]
            contexts = {d.target_prompt: bank.context(d.target_prompt) for d in data} if config.adversary_steps else None
            check = None
            if drawn is not None:
                drawn.reference(td.work)  # the deltas are still zero: the untouched model
                check = lambda: drawn(td.work)  # noqa: E731
            result = train_competition(list(td.deltas.values()), data, loss(td, bank), config, on_step, on_setup, input_bases,
                                       contexts, check)
            return td.detached(), result
