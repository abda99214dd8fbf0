"""Distractor-set benchmark: diversity of the chosen set against simple alternatives, and cost.

For every kind with a pool (artist, character, object, nsfw) and 20 targets per kind taken
from the pool at a fixed stride, with two text encoders (the pack's tiny test CLIP and a
full-size randomly initialised CLIP-L, the architecture SD1.5 uses):

* mean pairwise cosine distance of the K=8 set chosen by SurgUn's algorithm,
* the same for K random admissible candidates (mean of 20 draws per target),
* the same for the K admissible candidates nearest to the target.

Cost: time to build a K=8 set from the largest pool with the full-size CLIP-L, cold (nothing
cached) and warm (pool cached, a new target).

Both encoders are random-init (no weights can be downloaded here), so the similarities are
not semantic; the numbers measure what the selection does with a given geometry, not how
meaningful that geometry is. Run:  scripts/bench.sh distractors
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "fixtures" / "custom_nodes" / "surgun_test_nodes"))

K = 8
TARGETS_PER_KIND = 20
RANDOM_DRAWS = 20


def main() -> None:
    import headless

    headless.start()
    import torch

    import comfy.sd
    import comfy.sd1_clip
    import comfy.supported_models_base
    import tiny

    from model_init import reinit_
    from surgun_pack.surgun_comfy import text_embed
    from surgun_pack.surgun_core import distractors as dist

    DistractorParams, EmbeddingCache, admissible_mask = dist.DistractorParams, dist.EmbeddingCache, dist.admissible_mask
    apply_template, build_distractor_set, load_pool = dist.apply_template, dist.build_distractor_set, dist.load_pool
    mean_pairwise_distance = dist.mean_pairwise_distance

    def min_pairwise_distance(e):
        e = torch.nn.functional.normalize(e.float(), dim=-1)
        sim = e @ e.T
        sim.fill_diagonal_(-2.0)
        return float(1.0 - sim.max())

    def full_clip():
        clip = comfy.sd.CLIP(target=comfy.supported_models_base.ClipTarget(comfy.sd1_clip.SD1Tokenizer, comfy.sd1_clip.SD1ClipModel))
        reinit_(clip.cond_stage_model, 1)
        return clip

    results = {"k": K, "targets_per_kind": TARGETS_PER_KIND, "random_draws": RANDOM_DRAWS, "encoders": {}}
    with torch.inference_mode():
        encoders = {"tiny-test-clip (2 layers, width 64)": tiny.build_clip(0), "clip-l full size (random init)": full_clip()}
        for enc_name, clip in encoders.items():
            cache = EmbeddingCache()
            ident = text_embed.encoder_identity(clip)
            embed = cache.embedder(ident, text_embed.clip_encoder(clip))
            per_kind = {}
            for kind in ("artist", "character", "object", "nsfw"):
                pool = load_pool(kind)
                stride = max(1, len(pool.entries) // TARGETS_PER_KIND)
                targets = list(pool.entries[::stride][:TARGETS_PER_KIND])
                rows = []
                for t in targets:
                    s = build_distractor_set(t, kind, embed, DistractorParams(k=K))
                    prompts = [apply_template(pool.template, n) for n in pool.entries if n not in s.removed]
                    e = torch.nn.functional.normalize(embed(prompts), dim=-1)
                    tv = torch.nn.functional.normalize(embed([s.target_prompt])[0], dim=-1)
                    sims = e @ tv
                    ok, _ = admissible_mask(sims, torch.zeros(len(prompts), dtype=torch.bool), DistractorParams(k=K))
                    adm, adm_sims = e[ok], sims[ok]
                    g = torch.Generator().manual_seed(0)
                    rand = statistics.mean(mean_pairwise_distance(adm[torch.randperm(len(adm), generator=g)[:K]]) for _ in range(RANDOM_DRAWS))
                    nearest = mean_pairwise_distance(adm[torch.argsort(adm_sims, descending=True)[:K]])
                    chosen_e = torch.nn.functional.normalize(embed(s.prompts), dim=-1)
                    rand_min = statistics.mean(min_pairwise_distance(adm[torch.randperm(len(adm), generator=g)[:K]]) for _ in range(RANDOM_DRAWS))
                    rows.append({"target": t, "chosen": mean_pairwise_distance(chosen_e), "random": rand, "nearest": nearest,
                                 "chosen_min": min_pairwise_distance(chosen_e), "random_min": rand_min,
                                 "nearest_min": min_pairwise_distance(adm[torch.argsort(adm_sims, descending=True)[:K]]),
                                 "admissible": s.pool["admissible"]})
                per_kind[kind] = {
                    "chosen_min_mean": statistics.mean(r["chosen_min"] for r in rows),
                    "random_min_mean": statistics.mean(r["random_min"] for r in rows),
                    "nearest_min_mean": statistics.mean(r["nearest_min"] for r in rows),
                    "chosen_mean": statistics.mean(r["chosen"] for r in rows),
                    "random_mean": statistics.mean(r["random"] for r in rows),
                    "nearest_mean": statistics.mean(r["nearest"] for r in rows),
                    "chosen_beats_random": sum(r["chosen"] > r["random"] for r in rows),
                    "chosen_beats_nearest": sum(r["chosen"] > r["nearest"] for r in rows),
                    "n_targets": len(rows),
                    "rows": rows,
                }
            results["encoders"][enc_name] = {"identity": ident, "per_kind": per_kind}

        # cost with the full-size CLIP-L on the largest pool
        clip = encoders["clip-l full size (random init)"]
        largest = max(("artist", "character", "object", "nsfw"), key=lambda k: len(load_pool(k).entries))
        cache = EmbeddingCache()
        ident = text_embed.encoder_identity(clip)
        t0 = time.perf_counter()
        build_distractor_set("Zorblax One", largest, cache.embedder(ident, text_embed.clip_encoder(clip)), DistractorParams(k=K))
        cold = time.perf_counter() - t0
        t0 = time.perf_counter()
        build_distractor_set("Zorblax Two", largest, cache.embedder(ident, text_embed.clip_encoder(clip)), DistractorParams(k=K))
        warm = time.perf_counter() - t0
        results["cost"] = {"pool": largest, "pool_size": len(load_pool(largest).entries), "encoder": "clip-l full size",
                           "cold_s": round(cold, 3), "warm_s": round(warm, 4), "threads": torch.get_num_threads()}

    out = REPO / "benchmarks" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "distractors.json").write_text(json.dumps(results, indent=2))
    lines = ["# Distractor sets: diversity and cost", "",
             f"K={K}, {TARGETS_PER_KIND} targets per kind, random baseline = mean of {RANDOM_DRAWS} draws of K admissible candidates.",
             "Mean pairwise cosine distance (higher = more diverse) of text embeddings (mean of CLIP's output tokens), and the",
             "smallest pairwise distance in the set (what farthest-point selection maximises). Both encoders are random-init",
             "(not semantic): the numbers show what the selection does with a given geometry.", "",
             "| encoder | kind | chosen (max-min) | K random admissible | K nearest | chosen > random | chosen > nearest | min dist: chosen / random / nearest |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    for enc, d in results["encoders"].items():
        for kind, r in d["per_kind"].items():
            lines.append(f"| {enc} | {kind} | {r['chosen_mean']:.4f} | {r['random_mean']:.4f} | {r['nearest_mean']:.4f} | "
                         f"{r['chosen_beats_random']}/{r['n_targets']} | {r['chosen_beats_nearest']}/{r['n_targets']} | "
                         f"{r['chosen_min_mean']:.4f} / {r['random_min_mean']:.4f} / {r['nearest_min_mean']:.4f} |")
    c = results["cost"]
    lines += ["", f"Cost, full-size CLIP-L, largest pool ({c['pool']}, {c['pool_size']} entries), K={K}, {c['threads']} torch thread(s): "
              f"cold {c['cold_s']} s, warm {c['warm_s']} s."]
    (out / "distractors.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
