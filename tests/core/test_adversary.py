import pytest
import torch

from surgun_pack.surgun_core import ConceptData, TrainConfig, train_competition
from surgun_pack.surgun_core.adversary import SoftPromptAdversary, soft_name
from surgun_pack.surgun_core.errors import SurgUnError
from tiny_torch import TinyDenoiser, eps_loss_fn

TARGET, DISTRACTORS, RETAIN = "neon", ("oil", "ink", "clay"), ("cat", "dog")


def _world():
    """A target whose samples sit at +2, three distractors each around its own offset, two retain prompts at -1."""
    model = TinyDenoiser([TARGET, *DISTRACTORS, *RETAIN], ctx=6)
    g = torch.Generator().manual_seed(1)
    data = ConceptData(TARGET, torch.randn(8, 8, generator=g) + 2.0,
                       {d: torch.randn(8, 8, generator=g) + torch.randn(8, generator=g) for d in DISTRACTORS},
                       {r: torch.randn(8, 8, generator=g) - 1.0 for r in RETAIN})
    return model, data


def _own_context(model, prompt=TARGET):
    return model.table[model.prompts[prompt]].clone()


def _erase(model, data, adversary_steps, steps=150):
    params = list(model.parameters())
    cfg = TrainConfig(steps=steps, learning_rate=1e-2, ascent_cap=2.0, seed=0, shared_noise=True, adversary_steps=adversary_steps)
    return train_competition(params, data, eps_loss_fn(model), cfg, contexts={TARGET: _own_context(model)})


def _loss(model, x0, prompt, contexts=None):
    g, lf = torch.Generator().manual_seed(5), eps_loss_fn(model)
    with torch.no_grad():
        return float(torch.stack([lf(x0, [prompt] * len(x0), g, contexts=contexts).mean() for _ in range(20)]).mean())


def _soft_prompt_attack(model, data, steps=150):
    """What the benchmark's attacker does: a context, from the target prompt's own, optimised to denoise the target's samples."""
    for p in model.parameters():
        p.requires_grad_(False)
    ctx = _own_context(model).requires_grad_(True)
    opt, g = torch.optim.Adam([ctx], lr=1e-2), torch.Generator().manual_seed(99)
    for _ in range(steps):
        loss = eps_loss_fn(model)(data.target, ["soft"] * len(data.target), g, contexts={"soft": ctx}).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return _loss(model, data.target, "soft", {"soft": ctx.detach()})


def test_training_against_the_soft_prompt_leaves_an_attack_less_to_recover():
    """Plain SurgUn erases the words: a soft prompt from the same start brings the target back to about its
    untouched loss. Trained against a warm-started soft prompt, the same attack brings it back less far (it still
    recovers most of the erasure), the target prompt is erased about as far, and the retain prompts are kept about as well."""
    out = {}
    for steps in (0, 3):
        model, data = _world()
        untouched = _loss(model, data.target, TARGET)
        res = _erase(model, data, steps)
        retain = sum(_loss(model, data.retain[r], r) for r in RETAIN) / len(RETAIN)
        out[steps] = dict(erased=_loss(model, data.target, TARGET) / untouched, retain=retain,
                          attacked=_soft_prompt_attack(model, data) / untouched, drift=res.adversary_drift)
    plain, adv = out[0], out[3]
    assert plain["drift"] == {} and adv["drift"][TARGET] > 0.1, out
    assert plain["attacked"] < 1.1, out  # without the adversary the attack undoes the erasure (measured 1.05)
    assert adv["attacked"] > plain["attacked"] + 0.15, out  # measured 1.29
    assert adv["erased"] > 0.8 * plain["erased"], out
    assert adv["retain"] < 1.2 * plain["retain"], out  # measured 0.84 vs 0.78


def _spy(model, calls):
    base = eps_loss_fn(model)

    def spy(x0, prompts, g, **kw):
        contexts = {k: (v.detach().clone(), v.requires_grad) for k, v in (kw.get("contexts") or {}).items()}
        calls.append((list(prompts), kw.get("noise_rows"), contexts))
        return base(x0, prompts, g, **kw)
    return spy


def test_each_step_moves_the_soft_prompt_then_trains_the_competition_again_under_it_at_the_same_noise():
    model, data = _world()
    calls = []
    cfg = TrainConfig(steps=4, learning_rate=1e-3, ascent_cap=0, shared_noise=True, adversary_steps=2)
    train_competition(list(model.parameters()), data, _spy(model, calls), cfg, contexts={TARGET: _own_context(model)})
    soft = soft_name(TARGET)
    assert len(calls) == 4 * 3  # per step: two attack steps, then one training pass
    for attack1, attack2, (prompts, rows, contexts) in zip(calls[0::3], calls[1::3], calls[2::3]):
        assert attack1[0] == attack2[0] == [soft] and soft in attack1[2]
        # target, 2 distractors, 1 retain; then the target and the same distractors under the soft prompt
        assert prompts == [TARGET] * 3 + [prompts[3]] + [soft] * 3 and prompts[3] in RETAIN
        assert rows == [0, 0, 0, 3, 0, 0, 0]
        assert set(contexts) == {soft} and not contexts[soft][1]  # the weights train against it; it does not move here
        assert attack1[2][soft][1]  # the attack moves it
    assert not torch.equal(calls[0][2][soft][0], calls[-1][2][soft][0])  # it moved
    calls.clear()
    train_competition(list(model.parameters()), data, _spy(model, calls), TrainConfig(steps=2, learning_rate=1e-3, ascent_cap=0,
                                                                                       shared_noise=True))
    assert all(c[0] == [TARGET] * 3 + [c[0][3]] and not c[2] for c in calls)  # off: the step as before


def test_the_attack_moves_only_the_soft_prompt():
    model, data = _world()
    params = list(model.parameters())
    for p in params:
        p.grad = torch.full_like(p, 0.5)
    adv = SoftPromptAdversary({TARGET: _own_context(model)}, steps=3, lr=1e-2)
    start = adv.contexts()[soft_name(TARGET)].clone()
    adv.attack(eps_loss_fn(model), data.target[:2], TARGET, torch.Generator().manual_seed(0))
    assert all(torch.equal(p.grad, torch.full_like(p, 0.5)) for p in params)
    assert not torch.equal(adv.contexts()[soft_name(TARGET)], start) and adv.drift[TARGET] > 0


def test_an_adversary_without_the_target_contexts_is_refused_and_a_bad_count_too():
    model, data = _world()
    with pytest.raises(SurgUnError, match="no context was given for the target prompt 'neon'.*adversary_steps to 0"):
        train_competition(list(model.parameters()), data, eps_loss_fn(model), TrainConfig(steps=1, adversary_steps=1))
    with pytest.raises(SurgUnError, match="adversary_steps must be an integer >= 0, got -1"):
        TrainConfig(adversary_steps=-1)
