"""The render stop's probe (ascent_until_erased): what the sampler draws, compared with the training images."""

import pytest
import torch

from surgun_pack.surgun_comfy.drawn import SETS, DrawnProbe, decided_by, nearer_target
from surgun_pack.surgun_comfy.prompts import PromptBank
from surgun_pack.surgun_comfy.render import Renderer, draw_noise, latent_shape_for, sample_prompts
from surgun_pack.surgun_core.train import ConceptData


def test_a_render_is_drawn_as_the_target_only_when_it_is_nearer_the_target_than_every_distractor():
    g = torch.Generator().manual_seed(0)
    target, distractors = torch.randn(3, 4, 8, 8, generator=g), torch.randn(3, 2, 4, 8, 8, generator=g)
    near_target = target + 0.1 * torch.randn(3, 4, 8, 8, generator=g)
    near_second = distractors[:, 1] + 0.1 * torch.randn(3, 4, 8, 8, generator=g)
    assert nearer_target(near_target, target, distractors).tolist() == [True, True, True]
    assert nearer_target(near_second, target, distractors).tolist() == [False, False, False]
    # centred cosine: brightness and contrast do not decide it
    assert nearer_target(3 * near_target + 5, target, distractors).tolist() == [True, True, True]


def test_the_probe_renders_noise_the_training_never_saw_and_reads_its_references_from_the_untouched_model(comfy, tiny):
    """The probe's renders start from its own seeds' noise (not the training images'), every line of a set from its
    own noise and the line's distractors from the line's, however the prompts batch; its references are the untouched
    model's renders of the target lines and of each line's distractors, one set per seed; the checks read the sets in
    turn; the untouched model reads as drawn, and where a set's target image looks like a distractor's, that set reads
    as not drawn."""
    targets = ["a painting by zorblax", " ".join(["zorblax"] * 100)]  # the long one does not stack: its own batch
    distractors = ["a painting by monet", "a photo of a dog"]
    with torch.inference_mode():
        mp, clip = tiny.build_model("sd1"), tiny.build_clip()
        bank = PromptBank(clip, mp, latent_shape_for(mp, 32), torch.device("cpu"))
        train = sample_prompts(mp, bank, [[targets[0], *distractors]], 2, 3, 3.0, 5, "euler", "normal", shared_noise=True)
        data = [ConceptData(t, train[targets[0]], {d: train[d] for d in distractors}, {}, "zorblax") for t in targets]
        probe = DrawnProbe(Renderer(bank, 2, 3, 3.0, "euler", "normal"), data, 5, images=4, last_step=3)
        assert probe.count == 2 and len(probe.lines) == 2 and len(set(probe.seeds)) == SETS and 5 not in probe.seeds
        probe.reference(mp)
        noise = draw_noise(bank, 4, probe.seeds[1])  # set 1: 2 images for each of the 2 lines
        own = [sample_prompts(mp, bank, [[p] for p in [t, *distractors]], 2, 3, 3.0, probe.seeds[1], "euler", "normal",
                              noise=dict.fromkeys([t, *distractors], noise[2 * j:2 * j + 2]))
               for j, t in enumerate(targets)]  # run to the last step, a render is the finished image
        assert torch.allclose(probe.target[1], torch.cat([own[j][t] for j, t in enumerate(targets)]).float(), atol=1e-4)
        assert torch.allclose(probe.distractors[1][:, 1], torch.cat([o[distractors[1]] for o in own]).float(), atol=1e-4)
        # each line its own noise: the same distractor prompt is drawn differently for the two lines
        assert not torch.allclose(probe.distractors[1][:2, 1], probe.distractors[1][2:, 1], atol=1e-2)
        assert not torch.allclose(probe.target[0][:2], train[targets[0]].float(), atol=1e-2)  # not the training noise
        probe.target[1][:2] = probe.distractors[1][:2, 0]  # set 1: the first line's target looks like its first distractor
        assert [probe(mp)["zorblax"] for _ in range(SETS + 2)] == [1.0, 0.5, 1.0, 1.0, 1.0, 0.5]
        # the node's progress bar: each render's sampler steps announced, then ticked; raising from a tick stops it
        told, ticks = [], []
        probe.extend, probe.renderer.tick = told.append, lambda: ticks.append(1)
        probe(mp)
        assert told == [2 * 3] and len(ticks) == 6  # two batches (the long line does not stack), 3 steps each

        def cancel():
            raise KeyboardInterrupt("Cancel")

        probe.renderer.tick = cancel
        with pytest.raises(KeyboardInterrupt):
            probe(mp)
    assert decided_by(20) == 8 and decided_by(1) == 1
    assert DrawnProbe(Renderer(None, 2, 20, 5.0, "euler", "normal"), data, 0).last_step == 8  # by default
