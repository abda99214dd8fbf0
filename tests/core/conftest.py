"""Fixtures for the pure-torch core tests."""

import pytest
import torch

from tiny_torch import TinyDenoiser


@pytest.fixture
def concept_setup():
    target = "a painting by Target"
    distractors = {"d1": torch.full((4, 8), 1.0), "d2": torch.full((4, 8), -1.0), "d3": torch.zeros(4, 8)}
    retain = {"a photo of a dog": torch.linspace(-1, 1, 8).repeat(4, 1)}
    prompts = [target, *retain]
    model = TinyDenoiser(prompts)
    g = torch.Generator().manual_seed(1)
    return model, dict(target_prompt=target, target=torch.randn(4, 8, generator=g) + 2.0,
                       distractors=distractors, retain=retain)
