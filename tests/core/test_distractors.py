import hashlib

import pytest
import torch

from surgun_pack.surgun_core.distractors import (
    DistractorParams, EmbeddingCache, apply_template, build_distractor_set, load_pool, mean_pairwise_distance,
)
from surgun_pack.surgun_core.errors import SurgUnError


def hash_embed(dim=32):
    """A fixed pseudo-random embedding per prompt (stands in for a text encoder)."""
    calls = []

    def embed(prompts):
        calls.append(list(prompts))
        rows = []
        for p in prompts:
            seed = int.from_bytes(hashlib.sha256(p.encode()).digest()[:8], "little")
            rows.append(torch.randn(dim, generator=torch.Generator().manual_seed(seed)))
        return torch.stack(rows)

    embed.calls = calls
    return embed


def test_pools_are_real_and_large():
    for kind, minimum in (("artist", 400), ("character", 400), ("object", 400), ("nsfw", 300)):
        pool = load_pool(kind)
        assert len(pool.entries) >= minimum and "{x}" in pool.template and pool.source
        assert len({e.lower() for e in pool.entries}) == len(pool.entries)
    assert load_pool("custom").entries == ()


def test_template_fixes_the_article():
    assert apply_template("a photo of a {x}", "owl") == "a photo of an owl"
    assert apply_template("a photo of a {x}", "bicycle") == "a photo of a bicycle"
    assert apply_template("a painting in the style of {x}", "Alma Thomas") == "a painting in the style of Alma Thomas"


def test_same_inputs_same_set_and_seed_only_breaks_ties():
    p = DistractorParams(k=8, seed=1)
    a = build_distractor_set("Claude Monet", "artist", hash_embed(), p)
    b = build_distractor_set("Claude Monet", "artist", hash_embed(), p)
    c = build_distractor_set("Claude Monet", "artist", hash_embed(), DistractorParams(k=8, seed=2))
    assert a.names == b.names and a.sim_to_target == b.sim_to_target
    assert a.names == c.names  # no exact ties among random embeddings: the seed changes nothing


def test_seed_breaks_exact_ties():
    base = torch.eye(6)

    def tied(prompts):  # every candidate equally similar to the target and equally far apart
        return torch.stack([base[0] if p == "x" else base[1 + (sum(map(ord, p)) % 5)] for p in prompts])

    names = ["a", "b", "c", "d", "e"]
    picks = {tuple(build_distractor_set("x", "custom", tied, DistractorParams(k=1, seed=s), candidates=names).names) for s in range(12)}
    assert len(picks) > 1


def test_target_aliases_and_protected_are_never_chosen():
    embed = hash_embed()
    s = build_distractor_set("Van Gogh", "artist", embed, DistractorParams(k=40, band_quantile=0.0),
                             protected=["Claude Monet", "Katsushika Hokusai"])
    low = [n.lower() for n in s.names]
    assert "vincent van gogh" not in low and "van gogh" not in low
    assert "claude monet" not in low and "katsushika hokusai" not in low
    assert s.removed["Vincent van Gogh"] == "target or alias"
    assert s.removed["Claude Monet"] == "protected"


def test_aliases_are_removed_even_when_the_encoder_puts_them_far():
    def embed(prompts):
        out = hash_embed()(prompts)
        for i, p in enumerate(prompts):
            if "Pika" in p and "Pikachu" not in p:
                out[i] = -out[i]
        return out

    s = build_distractor_set("Pikachu", "character", embed, DistractorParams(k=30, band_quantile=0.0, exclude_quantile=1.0), candidates=["Pika"])
    assert "Pika" not in s.names and s.removed["Pika"] == "target or alias"


def test_selection_follows_the_thresholds_and_starts_at_the_nearest_admissible():
    s = build_distractor_set("Claude Monet", "artist", hash_embed(), DistractorParams(k=8))
    lo, hi = s.thresholds["band"], s.thresholds["exclude"]
    assert s.thresholds["applied"]
    assert all(lo <= v < hi for v in s.sim_to_target)
    assert s.sim_to_target[0] == max(s.sim_to_target)


def test_max_min_set_is_more_diverse_than_the_nearest_and_than_random_ones():
    embed = hash_embed()
    s = build_distractor_set("Claude Monet", "artist", embed, DistractorParams(k=8))
    chosen = mean_pairwise_distance(embed(s.prompts))
    pool = load_pool("artist")
    prompts = [apply_template(pool.template, n) for n in pool.entries if n not in s.removed]
    e = torch.nn.functional.normalize(embed(prompts), dim=-1)
    t = torch.nn.functional.normalize(embed([s.target_prompt])[0], dim=-1)
    sims = e @ t
    ok = (sims >= s.thresholds["band"]) & (sims < s.thresholds["exclude"])
    adm = e[ok]
    nearest = adm[torch.argsort(sims[ok], descending=True)[:8]]
    g = torch.Generator().manual_seed(0)
    randoms = [mean_pairwise_distance(adm[torch.randperm(len(adm), generator=g)[:8]]) for _ in range(50)]
    assert chosen > mean_pairwise_distance(nearest)
    assert chosen > max(randoms)


def test_k_larger_than_admissible_says_how_many_and_how_to_widen():
    with pytest.raises(SurgUnError) as e:
        build_distractor_set("Claude Monet", "artist", hash_embed(), DistractorParams(k=400))
    msg = str(e.value)
    assert "admissible candidates for k=400" in msg and "lower band_quantile" in msg
    n = int(msg.split("only ")[1].split(" ")[0])
    assert 200 < n < 300  # half the pool (band 0.5) minus the top 2 % and the aliases


def test_user_candidates_alone_and_added_to_a_pool():
    mine = ["a red fox", "a blue whale", "a green parrot"]
    s = build_distractor_set("a tabby cat", "custom", hash_embed(), DistractorParams(k=3), candidates=mine)
    assert sorted(s.names) == sorted(mine) and not s.thresholds["applied"]
    s2 = build_distractor_set("tabby cat", "object", hash_embed(), DistractorParams(k=8, band_quantile=0.0, exclude_quantile=1.0),
                              candidates=["zorblax machine"])
    assert s2.pool["size"] == len(load_pool("object").entries) + 1


@pytest.mark.parametrize("kwargs, match", [
    (dict(target=" ", kind="artist"), "target is empty"),
    (dict(target="x", kind="painter"), "unknown kind 'painter'"),
    (dict(target="x", kind="custom"), "there are no candidates"),
])
def test_bad_inputs(kwargs, match):
    with pytest.raises(SurgUnError, match=match):
        build_distractor_set(embed=hash_embed(), params=DistractorParams(k=2), **kwargs)


def test_cache_encodes_a_pool_once_per_encoder():
    raw = hash_embed()
    cache = EmbeddingCache()
    embed = cache.embedder("enc-1", raw)
    build_distractor_set("Claude Monet", "artist", embed, DistractorParams(k=8))
    n_first = sum(len(c) for c in raw.calls)
    build_distractor_set("Zorblax Quux", "artist", cache.embedder("enc-1", raw), DistractorParams(k=8))
    n_second = sum(len(c) for c in raw.calls) - n_first
    assert n_first > 500 and n_second == 1  # only the new target's prompt
    build_distractor_set("Frida Kahlo", "artist", cache.embedder("enc-2", raw), DistractorParams(k=8))
    assert sum(len(c) for c in raw.calls) - n_first - n_second > 500


def test_cache_persists_across_restarts(tmp_path):
    raw = hash_embed()
    first = EmbeddingCache(directory=str(tmp_path))
    build_distractor_set("Claude Monet", "artist", first.embedder("enc/1", raw), DistractorParams(k=8))
    calls = sum(len(c) for c in raw.calls)
    assert [p.name for p in tmp_path.iterdir()] == ["enc_1.safetensors"]
    restarted = EmbeddingCache(directory=str(tmp_path))
    again = build_distractor_set("Claude Monet", "artist", restarted.embedder("enc/1", raw), DistractorParams(k=8))
    assert sum(len(c) for c in raw.calls) == calls  # nothing encoded again
    assert restarted.size("enc/1") == calls
    first_set = build_distractor_set("Claude Monet", "artist", EmbeddingCache().embedder("x", hash_embed()), DistractorParams(k=8))
    assert again.names == first_set.names
    (tmp_path / "enc_1.safetensors").write_bytes(b"damaged")
    EmbeddingCache(directory=str(tmp_path)).embedder("enc/1", raw)(["a new prompt"])  # a damaged file is rebuilt
    assert sum(len(c) for c in raw.calls) == calls + 1


def test_several_targets_get_one_set_each_and_never_each_other():
    from surgun_pack.surgun_core.distractors import build_distractor_sets

    p = DistractorParams(k=40, band_quantile=0.0)
    sets = build_distractor_sets(["Van Gogh", "Claude Monet", "Hokusai"], "artist", hash_embed(), p)
    assert [s.target for s in sets.sets] == ["Van Gogh", "Claude Monet", "Hokusai"]
    for s in sets.sets:
        chosen = {n.lower() for n in s.names}
        # the other targets and their aliases are protected in each set
        assert not chosen & {"van gogh", "vincent van gogh", "claude monet", "monet", "hokusai"}
        assert len(s.names) == 40
    alone = build_distractor_set("Hokusai", "artist", hash_embed(), p, protected=["Van Gogh", "Claude Monet"])
    assert sets.sets[2].names == alone.names
    assert sets.target_prompt.splitlines() == [s.target_prompt for s in sets.sets]
    assert sets.names == list(dict.fromkeys(n for s in sets.sets for n in s.names))
    assert [m["target"] for m in sets.metadata()["sets"]] == ["Van Gogh", "Claude Monet", "Hokusai"]
    one = build_distractor_sets(["Hokusai"], "artist", hash_embed(), p)
    assert one.names == build_distractor_set("Hokusai", "artist", hash_embed(), p).names and not hasattr(one, "sets")


@pytest.mark.parametrize("targets, line", [(["Van Gogh", "Hokusai", "van gogh"], "lines 1 and 3"),
                                           (["Claude Monet", "Monet"], "lines 1 and 2")])
def test_a_concept_listed_twice_or_by_its_alias_is_refused(targets, line):
    from surgun_pack.surgun_core.distractors import build_distractor_sets

    with pytest.raises(SurgUnError, match=f"twice \\({line}.*Remove line"):
        build_distractor_sets(targets, "artist", hash_embed(), DistractorParams(k=4))
