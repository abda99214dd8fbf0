"""Prompt embeddings of the connected CLIP, for distractor selection."""

import torch

from surgun_pack.surgun_comfy.text_embed import clip_encoder


def test_batched_and_single_prompt_embeddings_agree(comfy, tiny):
    prompts = ["a painting in the style of Claude Monet", "an image of Pikachu", "a photo of a bicycle", "a quiet harbour at dawn"]
    with torch.inference_mode():
        clip = tiny.build_clip(0)
        batched = clip_encoder(clip, batch=4)(prompts)
        single = clip_encoder(clip, batch=1)(prompts)
    assert torch.allclose(batched, single, rtol=1e-4, atol=1e-5)
    e = torch.nn.functional.normalize(batched, dim=-1)
    off_diagonal = (e @ e.T)[~torch.eye(4, dtype=torch.bool)]
    assert off_diagonal.max() < 0.999  # padding is excluded, so different prompts do not collapse together
