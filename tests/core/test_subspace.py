import pytest
import torch

from surgun_pack.surgun_core import ConceptData, TrainConfig, train_competition
from surgun_pack.surgun_core.errors import SurgUnError
from surgun_pack.surgun_core.subspace import editable_basis
from tiny_torch import TinyDenoiser, eps_loss_fn

E = torch.eye(10)
STYLES = {"neon": E[0], "oil": E[1], "ink": E[2], "plain": E[3]}
OBJECTS = {"star": E[4], "cat": E[5], "dog": E[6], "cow": E[7]}


def prompt(obj: str, style: str) -> str:
    return f"a {obj} in {style} style"


def test_the_basis_holds_the_directions_the_differences_use_more_than_the_kept_tokens():
    g = torch.Generator().manual_seed(0)
    # kept tokens: large on dims 0-2, moderate on 3, tiny on 4, nothing on 5
    kept = torch.randn(4000, 6, generator=g) * torch.tensor([3.0, 3.0, 3.0, 1.0, 0.1, 0.0])
    # differences: small against the kept tokens on 0, large on 3 and 4, nothing on 5
    diff = torch.randn(4000, 6, generator=g) * torch.tensor([0.5, 0.0, 0.0, 2.0, 1.0, 0.0])
    q = editable_basis(diff, kept)
    assert q.shape == (6, 2)
    assert torch.allclose(q.T @ q, torch.eye(2), atol=1e-5)
    along = (q @ q.T).diagonal()  # how much of each axis the span holds
    assert along[3] > 0.99 and along[4] > 0.99
    assert along[0] < 0.01 and along[1] < 0.01 and along[2] < 0.01 and along[5] < 1e-6


def test_no_difference_is_refused():
    with pytest.raises(SurgUnError, match="paired with distractor"):
        editable_basis(torch.zeros(0, 4), torch.randn(3, 4))


def _world():
    """The target "a star in neon style"; distractors: the star in oil and ink; retain prompts elsewhere.
    Each prompt's embedding is its style's axis plus its object's axis."""
    target = prompt("star", "neon")
    distractors = [prompt("star", "oil"), prompt("star", "ink")]
    retain = [prompt("cat", "plain"), prompt("dog", "oil")]
    held_out = [prompt("cow", "plain"), prompt("cow", "neon")]
    prompts = [target, *distractors, *retain, *held_out]
    model = TinyDenoiser(prompts, ctx=10)
    for p, i in model.prompts.items():
        _, obj, _, style, _ = p.split()
        model.table[i] = STYLES[style] + OBJECTS[obj]
    g = torch.Generator().manual_seed(1)
    data = ConceptData(target, torch.randn(4, 8, generator=g) + 2.0,
                       {d: torch.randn(4, 8, generator=g) - 1.0 for d in distractors},
                       {r: torch.randn(4, 8, generator=g) for r in retain})
    emb = lambda ps: model.table[[model.prompts[p] for p in ps]]  # noqa: E731
    basis = editable_basis(emb([target]) - emb(distractors), emb([*distractors, *retain]))
    return model, data, basis, held_out


def _outputs(model, prompts):
    x = torch.linspace(-1, 1, 8).repeat(len(prompts), 1)
    with torch.no_grad():
        return model(x, torch.full((len(prompts),), 0.5), prompts)


def _target_loss(model, data):
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():
        return float(eps_loss_fn(model)(data.target, [data.target_prompt] * len(data.target), g).mean())


@pytest.mark.parametrize("confined", [True, False])
def test_a_prompt_off_the_competitions_directions_keeps_its_output_and_the_target_still_moves(confined):
    model, data, basis, (cow_plain, cow_neon) = _world()
    assert basis.shape[1] >= 1  # neon's axis: in every difference, in no kept prompt
    params = [model.block.attn2.to_k.weight, model.block.attn2.to_v.weight]
    for p in model.parameters():
        p.requires_grad_(False)
    for p in params:
        p.requires_grad_(True)
    before, loss0 = _outputs(model, [cow_plain, cow_neon]), _target_loss(model, data)
    train_competition(params, data, eps_loss_fn(model), TrainConfig(steps=60, learning_rate=0.05, ascent_cap=0, seed=0),
                      input_bases=[basis, basis] if confined else None)
    after, loss1 = _outputs(model, [cow_plain, cow_neon]), _target_loss(model, data)
    moved = (after - before).abs().max(dim=1).values
    assert loss1 > 1.2 * loss0  # the target is erased either way
    assert moved[1] > 1e-2  # a held-out object in the erased style changes either way (through the style's axis)
    if confined:
        assert moved[0] < 1e-5  # a held-out object in another style: its output is the untouched model's
    else:
        assert moved[0] > 1e-2  # unconfined, the update leaks onto every prompt


def test_one_basis_per_parameter_is_required():
    model, data, basis, _ = _world()
    with pytest.raises(SurgUnError, match="one \\(or None\\) per parameter"):
        train_competition([model.block.attn2.to_k.weight.requires_grad_(True)], data, eps_loss_fn(model),
                          TrainConfig(steps=1), input_bases=[basis, basis])
