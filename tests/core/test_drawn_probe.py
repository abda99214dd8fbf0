"""The render stop's reading (``surgun_core.drawn``), with a renderer that draws what it is told."""

import torch

from surgun_pack.surgun_core.drawn import SETS, DrawnProbe
from surgun_pack.surgun_core.train import ConceptData

G = torch.Generator().manual_seed(0)
LOOKS = {p: torch.randn(4, 6, 6, generator=G) for p in ("neon cat", "neon dog", "pastel cat", "pastel dog", "chalk cat",
                                                       "chalk dog", "tiger", "lion")}


class Painter(DrawnProbe):
    """Renders each prompt as its look plus a little of the noise; ``model`` maps a prompt to the prompt it now draws."""

    def __init__(self, *a, **k):
        super().__init__(*a, **k)
        self.rendered = []

    def draw_noise(self, n, seed):
        return torch.randn((n, 4, 6, 6), generator=torch.Generator().manual_seed(seed))

    def render(self, model, prompts, seed, noise):
        self.rendered.append((list(prompts), seed))
        return {p: LOOKS[model.get(p, p)] + 0.05 * noise[p] for p in prompts}


def data():
    x = torch.zeros(2, 4, 6, 6)
    style = [ConceptData(f"neon {o}", x, {f"pastel {o}": x, f"chalk {o}": x}, {}, "neon") for o in ("cat", "dog")]
    return [*style, ConceptData("tiger", x, {"lion": x}, {}, "tiger")]


def test_each_concept_reads_the_share_of_its_renders_still_nearer_its_own_image_than_a_distractors():
    probe = Painter(data(), seed=5, images=4)
    assert probe.count == 2 and len(probe.seeds) == SETS and 5 not in probe.seeds  # 4 images over the 2 neon lines
    probe.reference({})
    assert len(probe.noise) == SETS and probe.target[0].shape == (6, 4, 6, 6) and probe.distractors[0].shape == (6, 2, 4, 6, 6)
    assert probe({}) == {"neon": 1.0, "tiger": 1.0}  # the untouched model draws every target
    assert probe({"neon cat": "pastel cat"}) == {"neon": 0.5, "tiger": 1.0}  # one of neon's two lines now draws pastel
    assert probe({"neon cat": "chalk cat", "neon dog": "pastel dog", "tiger": "lion"}) == {"neon": 0.0, "tiger": 0.0}
    # the checks read the sets in turn, each with its own seed
    assert [s for _, s in probe.rendered[-3:]] == probe.seeds[:3] and probe.checks == 3
    probe({})
    probe({})
    assert probe.rendered[-1][1] == probe.seeds[0]
