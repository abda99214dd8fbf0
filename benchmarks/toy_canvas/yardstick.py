"""Toy canvas yardstick v2 (issue 12): held-out evaluation, full-strength baselines, attacks as an
adversary runs them, resumable.

    scripts/bench.sh toy_canvas.yardstick [--quick] [--targets style:neon,object:star] [--methods surgun,esd_x]
        [--first-seeds 1] [--lrs 1e-3,3e-3] [--no-attacks] [--report-only] [--speed] [--pixel] [--out DIR]

What is held out, and how, is in ``split.py`` (a test intersects the sets); the methods in
``methods_v2.py``. Phases, each streamed to ``<out>/runs.jsonl`` (a rerun skips what is there):

1. ``paraphrase_forms``: which rephrasings of a concept the untouched model still draws (classifier,
   every concept of each kind, eval-half contexts); the forms recognised >= 0.8 (and never trained
   on by any method) are the gradient-free paraphrase attack;
2. ``untouched`` per target: distractors (SurgUn's algorithm), related concepts, metrics;
3. ``grid``: every method x lr x seed: UA, IRA, CRA, H, related retention, kept-on-target, mode spread;
4. ``attack``: at each method's best lr per kind (highest mean H over what is done) and at the lr its
   row of "Where SurgUn stands" shows (UCE: its best lambda for the target), every seed:
   soft-prompt recovery toward fresh samples at two strengths, and paraphrase recovery;
5. ``pixel`` (``--pixel``): grid runs made before grid runs scored retain in pixels (the standing table's
   rows, or ``--methods``), rerun at the same lr and seed for that score (see ``Yardstick.pixel_retain``).

Outputs: ``benchmarks/results/toy_canvas_v2.{md,json}``, PNGs ``toy_canvas_v2_pareto_{style,object}.png``,
``toy_canvas_v2_attacks.png`` and ``toy_canvas_v2_pixel_vs_soft.png``; the JSONL under ``benchmarks/results/toy_canvas_v2/``.
The quick mode (CI) starts afresh under ``benchmarks/results/quick`` (not committed) and checks loose bounds.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from . import split
from .methods_v2 import (
    ABLATIONS,
    COMPUTE_MATCHED,
    NOXATTN,
    STEP_MATCHED,
    UCE_LAMBDAS,
    VARIANTS,
    V2_METHODS,
    V2Method,
    anchor_map,
    concept_data,
    sample_prompts_needed,
    training_prompts,
    uce_deltas,
)
from ...surgun_core.scores import pixel_embed, retain_score
from .erasure import setup_logging
from .run import REPO, RESULTS, Bench, Settings, harmonic, read_targets

log = logging.getLogger("surgun.bench.toy_canvas")
OUT = RESULTS / "toy_canvas_v2"
RECOGNISED = 0.8


@dataclass
class V2Settings:
    steps: int = 60
    lrs: tuple = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2)
    seeds: tuple = (0, 1, 2)
    methods: tuple = STEP_MATCHED + COMPUTE_MATCHED + ABLATIONS + VARIANTS
    samples_per_prompt: int = 2
    """Training samples per prompt (the node's samples_per_prompt; the baselines draw the same number)."""
    eval_target_per_prompt: int = 8
    eval_other_per_prompt: int = 2
    eval_related_per_prompt: int = 2
    attacks: bool = True
    attack_steps: tuple = (40, 150)
    attack_seeds: tuple = (0, 1)
    attack_refs: int = 4
    """Fresh reference samples per eval target prompt and attack seed (never trained on)."""
    attack_images: int = 16
    """Images per optimised soft prompt (4 prompts x 2 attack seeds x 16 = 128 per strength)."""
    attack_lr: float = 1e-2
    paraphrase_images: int = 4
    paraphrase_measure_images: int = 1
    """Per (concept, eval context) and form: 32 images per form and kind."""
    k_distractors: int = 3
    quick: bool = False


def quick_v2() -> V2Settings:
    return V2Settings(steps=80, lrs=(1e-3,), seeds=(0,), methods=("surgun",), eval_target_per_prompt=4,
                      eval_other_per_prompt=1, eval_related_per_prompt=1, attacks=False, quick=True)


def toy_nodes_dir() -> Path:
    """A custom_nodes folder holding only the toy canvas loader package (as scripts/demo.py)."""
    root = Path(tempfile.mkdtemp(prefix="surgun-toy-nodes-"))
    (root / "surgun_toy_canvas").symlink_to(REPO / "benchmarks" / "toy_canvas" / "comfy_nodes", target_is_directory=True)
    return root


def fresh_load() -> None:
    """Unload every model (ComfyUI restores the base weights) before UCE reads the base weights and before
    sampling. Measured here: UCE computed while the previous clone's patches were applied in place read the
    patched weights, and its edit came out wrong (lambda 0.03 after 0.01: UA 0.0; after an unload: 1.0)."""
    import comfy.model_management

    comfy.model_management.unload_all_models()


def run_key(rec: dict) -> str:
    return "|".join(str(rec.get(k, "")) for k in ("phase", "target", "method", "lr", "seed"))


def entropy_bits(idx: torch.Tensor, n: int = 8) -> float:
    p = torch.bincount(idx, minlength=n).float()
    p = p[p > 0] / p.sum()
    return max(0.0, float(-(p * p.log2()).sum()))


def binom_sd(p: float, n: int) -> float:
    return math.sqrt(p * (1 - p) / n) if n else float("nan")


class Yardstick(Bench):
    def __init__(self, s: V2Settings, weights: str | None = None):
        if str(REPO / "scripts") not in sys.path:
            sys.path.insert(0, str(REPO / "scripts"))
        import headless

        self.v2 = s
        self.weights_path = weights or ""
        headless.start([toy_nodes_dir()])  # once per process: Bench's own start() returns this one
        super().__init__(Settings(k_distractors=s.k_distractors, localize=False, grids=False), weights)
        self.node_comfy = self.comfy
        self.done: dict[str, dict] = {}
        self.jsonl: Path | None = None
        self._refs: dict = {}
        self._train_samples: dict = {}
        self._protected: dict = {}
        self._untouched: dict = {}

    # ---------------------------------------------------------------- bookkeeping
    def load(self, path: Path) -> None:
        self.jsonl = path
        if path.exists():
            for line in path.read_text().splitlines():
                if line.strip():
                    rec = json.loads(line)
                    self.done[run_key(rec)] = rec

    def record(self, rec: dict) -> dict:
        self.done[run_key(rec)] = rec
        if self.jsonl:
            self.jsonl.parent.mkdir(parents=True, exist_ok=True)
            with open(self.jsonl, "a") as f:
                f.write(json.dumps(rec) + "\n")
        return rec

    # ---------------------------------------------------------------- concepts
    def related(self, kind: str, name: str) -> list[str]:
        """The 2 concepts nearest the target by the untouched text encoder (cosine of the mean pooled
        embedding of the concept's 8 prompts, as the distractor algorithm embeds them)."""
        with torch.inference_mode():
            def emb(n):
                return torch.stack([self.bank.conditioning(p)[0][1]["pooled_output"][0].float() for p in self.prompts_of(kind, n)]).mean(0)
            t = emb(name)
            sims = {n: float(torch.nn.functional.cosine_similarity(t, emb(n), dim=0)) for n in self.others(kind, name)}
        return sorted(sims, key=lambda n: -sims[n])[:2]

    def protected_distractors(self, kind: str, name: str, related) -> list[str]:
        """The algorithm's distractors with the related concepts protected (``protect_related`` variants)."""
        key = (kind, name, tuple(related))
        if key not in self._protected:
            self._protected[key] = self.choose_distractors(kind, name, protected=related)["names"]
        return self._protected[key]

    def distractors_of(self, mname: str, kind: str, name: str, u: dict) -> list[str]:
        """The distractor names method ``mname`` trains with (``u``: the target's untouched record)."""
        if V2_METHODS[mname].protect_related:
            return self.protected_distractors(kind, name, u["related"])
        return u["distractors"]["names"]

    def check_held_out(self, kind: str, name: str, chosen: list[str], related: list[str], forms) -> None:
        """The runtime twin of the test: no evaluated prompt is trained on by any method."""
        own = lambda m: self.protected_distractors(kind, name, related) if V2_METHODS[m].protect_related else chosen
        trained = set().union(*(training_prompts(m, kind, name, own(m)) for m in V2_METHODS))
        for role, prompts in split.eval_prompt_sets(kind, name, chosen, related, forms).items():
            leak = [p for p in prompts if p.lower() in trained]
            assert not leak, f"held-out {role} prompts are trained on: {leak}"

    # ---------------------------------------------------------------- measurement
    def sample_keys(self, model, conds: dict, keys: list[str], seed: int) -> torch.Tensor:
        fresh_load()
        with torch.inference_mode():
            return self.gate.sample_latents(model, conds, self.bank.conditioning(self.constants.NEGATIVE_PROMPT), keys, seed)

    def cls_of(self, model, prompts: list[str], seed: int) -> dict:
        return self.cls_images(model, prompts, seed)[0]

    def cls_images(self, model, prompts: list[str], seed: int) -> tuple[dict, torch.Tensor]:
        """The classifier's labels and the decoded images of ``prompts`` (one each) at ``seed``."""
        fresh_load()
        latents = self.sample(model, prompts, seed)
        with torch.inference_mode():
            images = self.vae.decode(latents).float().cpu()
        return self.cls_mod.classify(self.classifier, images), images

    def untouched_images(self, prompts: list[str], seed: int) -> torch.Tensor:
        key = (tuple(prompts), seed)
        if key not in self._untouched:
            self._untouched[key] = self.cls_images(self.model, prompts, seed)[1]
        return self._untouched[key]

    def pixel_retain(self, images: torch.Tensor, prompts: list[str], seed: int) -> float:
        """What the Erase/Retain Compare node reads as retain, with its pixel embedding: the mean of the thumbnail
        cosine and the SSIM of each image against the untouched model's image of the same prompt and seed (1 = the
        same image). Unlike the classifier's labels, it sees damage to what the labels do not name."""
        orig = self.untouched_images(prompts, seed)
        return retain_score(pixel_embed(images), pixel_embed(orig), images, orig)["retain"]

    def retain_eval_prompts(self, kind: str, name: str, chosen, related) -> tuple[list[str], list[str]]:
        """The evaluation's retain prompts and related concepts' prompts, each repeated per image, in sampling order."""
        s = self.v2
        return ([p for p in split.eval_retain_prompts(kind, name, chosen) for _ in range(s.eval_other_per_prompt)],
                [p for p in split.related_prompts(kind, related) for _ in range(s.eval_related_per_prompt)])

    def pixel_floor(self, kind: str, name: str, chosen, related) -> dict:
        """The scale of :meth:`pixel_retain`: the untouched model's retain and related images at the floor seeds
        scored against its own at the evaluation seeds (a fresh draw of the same prompts, nothing erased)."""
        rp, qp = self.retain_eval_prompts(kind, name, chosen, related)
        floor = lambda ps, role: self.pixel_retain(self.cls_images(self.model, ps, split.SEED_BASES["pixel_floor"])[1], ps,
                                                   split.SEED_BASES[role])
        return {"pixel_retain": floor(rp, "eval_retain"), "pixel_related": floor(qp, "eval_related")}

    def measure_paraphrases(self) -> dict:
        """Recognition of each paraphrase form on the untouched model, over every concept of the kind."""
        out = {}
        n = self.v2.paraphrase_measure_images
        for kind in ("style", "object"):
            head = kind
            for form in split.PARAPHRASE_FORMS[kind]:
                prompts, truth = [], []
                for i, c in enumerate(split.names_of(kind)):
                    ps = split.paraphrase_prompts(kind, c, form)
                    prompts += [p for p in ps for _ in range(n)]
                    truth += [i] * (len(ps) * n)
                cls = self.cls_of(self.model, prompts, split.SEED_BASES["paraphrase_measure"])
                acc = (cls[head] == torch.tensor(truth)).float()
                per = {c: acc[torch.tensor(truth) == i].mean().item() for i, c in enumerate(split.names_of(kind))}
                out[f"{kind}:{form}"] = {"kind": kind, "form": form, "template": split.PARAPHRASE_FORMS[kind][form],
                                         "recognised": acc.mean().item(), "per_concept": per, "n_images": len(prompts)}
                log.info(f"[SurgUn] [paraphrase] {kind} {form:14s} {split.PARAPHRASE_FORMS[kind][form]!r:34s} recognised {acc.mean().item():.3f}")
        return out

    def attack_forms(self, kind: str, name: str, chosen, measured: dict) -> list[str]:
        """Paraphrase forms that hold on the untouched model and that no method trains on."""
        trained = set().union(*(training_prompts(m, kind, name, chosen) for m in V2_METHODS))
        return [f for f in split.PARAPHRASE_FORMS[kind]
                if measured.get(f"{kind}:{f}", {}).get("recognised", 0) >= RECOGNISED
                and not any(p.lower() in trained for p in split.paraphrase_prompts(kind, name, f))]

    def evaluate2(self, model, kind: str, name: str, chosen, related) -> dict:
        s = self.v2
        w = self.world
        same, cross = ("style", "object") if kind == "style" else ("object", "style")
        names = {"style": list(w.STYLES), "object": list(w.OBJECTS)}
        t_idx = names[same].index(name)

        truth = w.class_indices

        tp = [p for p in split.eval_target_prompts(kind, name) for _ in range(s.eval_target_per_prompt)]
        rp, qp = self.retain_eval_prompts(kind, name, chosen, related)
        ct = self.cls_of(model, tp, split.SEED_BASES["eval_target"])
        cr, xr = self.cls_images(model, rp, split.SEED_BASES["eval_retain"])
        cq, xq = self.cls_images(model, qp, split.SEED_BASES["eval_related"])
        ua = (ct[same] != t_idx).float().mean().item()
        ira = (cr[same] == truth(rp, same)).float().mean().item()
        cra = (cr[cross] == truth(rp, cross)).float().mean().item()
        return {"UA": ua, "IRA": ira, "CRA": cra, "H": harmonic(ua, ira, cra),
                "related_IRA": (cq[same] == truth(qp, same)).float().mean().item(),
                "kept_on_target": (ct[cross] == truth(tp, cross)).float().mean().item(),
                "mode_spread_bits": entropy_bits(ct[same]),
                "pixel_retain": self.pixel_retain(xr, rp, split.SEED_BASES["eval_retain"]),
                "pixel_related": self.pixel_retain(xq, qp, split.SEED_BASES["eval_related"]),
                "n_target_images": len(tp), "n_retain_images": len(rp), "n_related_images": len(qp)}

    def references(self, kind: str, name: str) -> dict:
        """Fresh samples of each eval target prompt from the untouched model, per attack seed."""
        key = (kind, name)
        if key not in self._refs:
            out = {}
            for a in self.v2.attack_seeds:
                for p in split.eval_target_prompts(kind, name):
                    out[(p, a)] = None
                lat = self.sample(self.model, [p for p in split.eval_target_prompts(kind, name) for _ in range(self.v2.attack_refs)],
                                  split.attack_reference_seed(a))
                for i, p in enumerate(split.eval_target_prompts(kind, name)):
                    out[(p, a)] = lat[i * self.v2.attack_refs:(i + 1) * self.v2.attack_refs]
            self._refs[key] = out
        return self._refs[key]

    def soft_attack(self, model, kind: str, name: str) -> dict:
        """One soft prompt (cross-attention context) per eval target prompt and attack seed, optimised
        jointly (one Adam over independent parameters) to make ``model`` denoise the fresh references."""
        from ...surgun_comfy.deltas import TrainableDeltas
        from ...surgun_comfy.losses import draw_sigmas, objective_weight

        s = self.v2
        refs = self.references(kind, name)
        keys = list(refs)
        same = kind
        t_idx = list(split.names_of(kind)).index(name)
        res = {}
        # Sampling (inference mode) re-applies the patches in place as inference tensors, which autograd cannot
        # save: each run of optimiser steps enters its own TrainableDeltas (measured: one block around the steps
        # and the checkpoint sampling failed at the first step after a checkpoint); ctx, Adam and noise carry over.
        base = model.model
        with torch.inference_mode(False):
            ctx = torch.cat([self.bank.conditioning(p)[0][0].clone() for p, _ in keys]).clone().requires_grad_(True)
            x0 = torch.cat([base.process_latent_in(refs[k].clone()).clone() for k in keys])
        owner = torch.tensor([i for i, k in enumerate(keys) for _ in range(refs[k].shape[0])])
        opt = torch.optim.Adam([ctx], lr=s.attack_lr)
        g = torch.Generator().manual_seed(4242)
        done = 0
        for checkpoint in s.attack_steps:
            with torch.inference_mode(False), TrainableDeltas(model, []) as td:
                base = td.work.model
                for _ in range(checkpoint - done):
                    sigma = draw_sigmas(base.model_sampling, x0.shape[0], g)
                    noise = torch.randn(x0.shape, generator=g)
                    xt = base.model_sampling.noise_scaling(sigma, noise, x0)
                    pred = base.apply_model(xt, sigma, c_crossattn=ctx[owner])
                    loss = ((pred - x0).pow(2).flatten(1).mean(1) * objective_weight(base.model_sampling, sigma)).mean()
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
            done = checkpoint
            hits, n = 0, 0
            for a in s.attack_seeds:
                conds, names = {}, []
                for i, (p, aa) in enumerate(keys):
                    if aa != a:
                        continue
                    _, extra = self.bank.conditioning(p)[0]
                    conds[f"{p}#{a}"] = [[ctx[i:i + 1].detach().clone(), extra]]
                    names += [f"{p}#{a}"] * s.attack_images
                cls = self.classify(self.sample_keys(model, conds, names, split.attack_eval_seed(a)))
                hits += int((cls[same] == t_idx).sum())
                n += len(names)
            res[f"soft@{checkpoint}"] = hits / n
        res["soft_n_images"] = n
        return res

    def paraphrase_attack(self, model, kind: str, name: str, forms: list[str]) -> dict:
        t_idx = list(split.names_of(kind)).index(name)
        out, hits, n = {}, 0, 0
        for f in forms:
            ps = [p for p in split.paraphrase_prompts(kind, name, f) for _ in range(self.v2.paraphrase_images)]
            cls = self.cls_of(model, ps, split.SEED_BASES["paraphrase_eval"])
            ok = (cls[kind] == t_idx)
            out[f"para:{f}"] = ok.float().mean().item()
            hits += int(ok.sum())
            n += len(ps)
        if n:
            out["paraphrase"] = hits / n
            out["paraphrase_n_images"] = n
        return out

    # ---------------------------------------------------------------- training
    def train_samples(self, kind: str, name: str, chosen, seed: int) -> dict:
        """Baselines' training samples: the node's renderer, the same count per prompt, seed ``seed + batch``."""
        from ...surgun_comfy.render import Renderer

        key = (kind, name, seed)
        if key not in self._train_samples:
            self._train_samples.clear()
            r = Renderer.for_model(self.model, self.clip, self.family, self.constants.WIDTH, self.v2.samples_per_prompt,
                                   self.constants.STEPS, self.constants.CFG)
            batches = r.plan(sample_prompts_needed(kind, name, chosen))
            assert len(batches) <= split.TRAIN_SEED_SPAN
            self._train_samples[key] = r.latents(self.model, batches, seed)
        return self._train_samples[key]

    def surgun_graph(self, m: V2Method, kind: str, name: str, chosen, lr: float, seed: int, render_steps: int | None = None) -> dict:
        """The graph a user wires: the toy loader, SurgUn Train, and for ``m.localized`` the Block Localizer
        (``m``: SurgUn or an ablation: fewer distractors, a weight at 0, or blocks from the localiser)."""
        text = split.surgun_node_text(kind, name, chosen, m.n_distractors)
        size, steps, cfg = self.constants.WIDTH, self.constants.STEPS, self.constants.CFG
        graph = {
            "ld": {"class_type": "SurgUnToyCanvasLoader", "inputs": {"weights_path": self.weights_path}},
            "tr": {"class_type": "SurgUnTrain", "inputs": {
                "model": ["ld", 0], "clip": ["ld", 1], **text, "blocks": "cross_attention", "block_pattern": "",
                "steps": self.v2.steps, "learning_rate": lr, "ascent_weight": 1.0, "distractor_weight": 1.0,
                "retain_weight": 1.0, "ascent_cap": 2.0, "seed": seed, "sample_size": size,
                "sample_steps": steps, "samples_per_prompt": self.v2.samples_per_prompt,
                "sample_cfg": cfg, "filename_prefix": "", **dict(m.node)}},
        }
        if m.localized:  # the localiser's defaults, its probe at the training's lr and steps, renders as the samples
            graph["lo"] = {"class_type": "SurgUnBlockLocalizer", "inputs": {
                "model": ["ld", 0], "clip": ["ld", 1], "vae": ["ld", 2], **text, "blocks": "cross_attention",
                "granularity": "attention", "probe_steps": 20, "learning_rate": lr, "train_steps": self.v2.steps,
                "keep": 4, "min_fraction": 0.5, "noise_floor": True, "erase_threshold": 0.0, "images_per_prompt": 2,
                "render_steps": render_steps or steps, "render_size": size, "render_cfg": cfg, "max_blocks": 0, "seed": seed}}
            graph["tr"]["inputs"]["block_set"] = ["lo", 0]
        return graph

    def surgun_node(self, m: V2Method, kind: str, name: str, chosen, lr: float, seed: int):
        """The SurgUn Train node in ComfyUI's executor, wired as a user wires it (see ``surgun_graph``)."""
        res = self.node_comfy.run(self.surgun_graph(m, kind, name, chosen, lr, seed))
        if not res.success and m.localized and "no block erases above the noise floor" in res.error_text():
            # the user's graph stops here and the model stays as it was: scored as the untouched model
            log.info(f"[SurgUn]   {m.name} lr {lr:.0e}: the Block Localizer refused ({res.error_text()[:120]})")
            return self.model, {"refused": "Block Localizer: no block erases above the noise floor", "layers": 0}
        if not res.success:
            raise RuntimeError(f"SurgUnTrain failed: {res.error_text()}")
        erased, weights = res.outputs["tr"][0][0], res.outputs["tr"][1][0]
        info = {"final_loss": weights.metadata["final"].get("loss"), "guard_stops": weights.metadata["guard"]["stops"],
                "layers": len(weights.deltas)}
        readout = weights.metadata["readout"]
        if readout.get("erased_at") is not None:  # ascent_until_erased: the checks that held the ascent off, its steps
            info |= {"held_off_at": readout["erased_at"], "ascent_steps": readout.get("ascent_steps")}
        if m.localized:
            info["modules"] = weights.metadata["blocks"]["modules"]
        return erased, info

    def train(self, mname: str, kind: str, name: str, chosen, lr: float, seed: int):
        import comfy.sd

        from ...surgun_comfy.training import train_deltas
        from ...surgun_core.train import TrainConfig
        from ...surgun_core.weights import delta_key
        from .baselines import METHODS
        from .methods_v2 import ca_model_loss

        m = V2_METHODS[mname]
        if m.is_surgun:
            return self.surgun_node(m, kind, name, chosen, lr, seed)
        if mname == "uce":
            fresh_load()  # the closed form reads the base weights: no clone's patches may be applied in place
            groups = [(t, a) for t, a in anchor_map(kind, name, chosen).items()]
            from .methods_v2 import baseline_groups
            keep = list(dict.fromkeys(r for g in baseline_groups(kind, name, chosen) for r in g["retain"]))
            deltas = uce_deltas(self.model, self.bank, self.modules, groups, keep, lam=lr)
            info = {"layers": len(deltas)}
        else:
            base = METHODS[m.base]
            data = concept_data(mname, kind, name, chosen, self.train_samples(kind, name, chosen, seed))
            loss = ca_model_loss(anchor_map(kind, name, chosen)) if m.ca_model else base.loss
            cfg = TrainConfig(steps=self.v2.steps * m.steps_mult, learning_rate=lr, weights=base.weights,
                              ascent_cap=base.ascent_cap, seed=seed, distractors_per_step=2)
            modules = esd_u_modules(self.model.model.diffusion_model) if m.esd_u else self.modules
            deltas, result = train_deltas(self.model, self.bank, data, modules, cfg, self.family.arch.checkpoint_units, loss=loss)
            info = {"final_loss": result.history[-1]["loss"], "layers": len(deltas)}
        erased, _ = comfy.sd.load_lora_for_models(self.model, None, {delta_key(n): d for n, d in deltas.items()}, 1.0, 0)
        return erased, info

    def probe_cost(self, kind: str, name: str, chosen, lr: float = 3e-3, seed: int = 0) -> dict:
        """CPU seconds of the Block Localizer node and of the SurgUn Train node it steers, each alone in
        the executor, as surgun_loc wires them (the localiser's own split from its table_json). The
        localiser runs twice: with its renders as the training's samples (surgun_loc's wiring: same
        size, steps and cfg) and at the node's default render_steps (what a user who keeps the
        Localizer's defaults runs; the toy's size stays its native 32 px)."""
        from ...nodes.localize_node import SurgUnBlockLocalizer

        default_steps = next(i.default for i in SurgUnBlockLocalizer.define_schema().inputs if i.id == "render_steps")
        full = self.surgun_graph(V2_METHODS["surgun_loc"], kind, name, chosen, lr, seed)
        self.node_comfy.run({"ld": full["ld"]})  # the loader's cost counts for neither
        out = {}

        def localizer(render_steps: int) -> dict:
            lo = self.surgun_graph(V2_METHODS["surgun_loc"], kind, name, chosen, lr, seed, render_steps)["lo"]
            return {"ld": full["ld"], "lo": lo, "show": {"class_type": "PreviewAny", "inputs": {"source": ["lo", 2]}}}

        runs = (("localizer", localizer(self.constants.STEPS)), (f"localizer_render_steps_{default_steps}", localizer(default_steps)),
                ("train", self.surgun_graph(V2_METHODS["surgun"], kind, name, chosen, lr, seed)))
        for label, graph in runs:
            t0 = time.process_time()
            res = self.node_comfy.run(graph)
            out[label] = {"cpu_s": round(time.process_time() - t0, 1)}
            if not res.success:
                raise RuntimeError(f"{label} failed: {res.error_text()}")
            if label.startswith("localizer"):
                table = json.loads(res.outputs["lo"][2][0])
                out[label].update(timing_s=table["timing_s"], blocks=len(table["blocks"]), chosen=table["chosen"],
                                  retain_rendered=sum(b["retain"] is not None for b in table["blocks"]),
                                  render_steps=graph["lo"]["inputs"]["render_steps"])
        out["ratio_localizer_to_train"] = round(out["localizer"]["cpu_s"] / out["train"]["cpu_s"], 2)
        out[f"ratio_localizer_render_steps_{default_steps}_to_train"] = round(
            out[f"localizer_render_steps_{default_steps}"]["cpu_s"] / out["train"]["cpu_s"], 2)
        out["train_sample_steps"] = self.constants.STEPS
        return out

    # ---------------------------------------------------------------- the localiser's resolution
    def embed_floor(self, targets, images_per_prompt: int = 2) -> dict:
        """Can the Block Localizer's score see an erasure at all? Per target and image embedding (the
        shipped pixel fallback; a Fourier-magnitude candidate, not shipped): the noise floor the
        localiser computes (``surgun_core.localize.noise_floor``: the untouched model re-rendered with
        other seeds) against the score of a *complete* erasure (every target image replaced by a
        distractor's image in the same context, same seeds). ``full / floor`` below 1: no block can pass."""
        from ...surgun_core.localize import noise_floor
        from ...surgun_core.scores import PIXEL_FALLBACK, competition, pixel_embed

        def fourier_embed(images: torch.Tensor, side: int = 32) -> torch.Tensor:
            x = torch.nn.functional.adaptive_avg_pool2d(images.float().permute(0, 3, 1, 2), (side, side))
            mean = x.mean(dim=(2, 3))
            return torch.cat([torch.fft.rfft2(x - mean[..., None, None], norm="ortho").abs().flatten(1), mean * side], 1)

        images = lambda prompts, seed: self.vae.decode(self.sample(self.model, prompts, seed)).float().cpu()
        out = {"embeddings": {"pixel": PIXEL_FALLBACK, "fourier": "candidate (not shipped): |rfft2| of 32x32 mean-removed "
                                                                     "RGB thumbnails and the mean colour (translation invariant)"},
               "images_per_prompt": images_per_prompt, "targets": {}}
        for kind, name in targets:
            chosen = self.choose_distractors(kind, name)["names"]
            ctx = split.contexts(kind, "train")
            tp = [split.cell(kind, name, c) for c in ctx for _ in range(images_per_prompt)]
            swapped = [split.cell(kind, chosen[i % len(chosen)], c) for i, c in enumerate(ctx) for _ in range(images_per_prompt)]
            ref = {"target": images(tp, 11), "floor": images(tp, 22), "target_ref": images(tp, 33),
                   "distractors": images([split.cell(kind, d, c) for d in chosen for c in ctx], 44)}
            full_images = images(swapped, 11)
            row = {}
            for ename, embed in (("pixel", pixel_embed), ("fourier", fourier_embed)):
                t_ref, d_ref = embed(ref["target_ref"]), embed(ref["distractors"])
                score = lambda x: competition(embed(x), t_ref, d_ref)["score"].mean().item()
                floor = noise_floor(ref, embed)
                full = score(full_images) - score(ref["target"])
                row[ename] = {"floor": round(floor, 4), "full_erase": round(full, 4), "full_over_floor": round(full / floor, 2)}
            out["targets"][f"{kind}:{name}"] = row
            log.info(f"[SurgUn] [embed floor] {kind}:{name} {row}")
        return out

    # ---------------------------------------------------------------- speed
    def speed(self, kind: str, name: str, chosen, steps: int = 25) -> dict:
        """CPU seconds per training step (median over ``steps``), SurgUn's objective vs ESD-x, same layers and loop."""
        from ...surgun_comfy.drawn import DrawnProbe
        from ...surgun_comfy.render import Renderer
        from ...surgun_comfy.training import train_deltas
        from ...surgun_core.train import ConceptData, TrainConfig
        from .baselines import METHODS
        from .methods_v2 import baseline_groups

        from ...surgun_core.pairing import with_distractors

        samples = self.train_samples(kind, name, chosen, 0)
        # the render stop's renderer, as the node builds it (the training sampler and settings, the prompts' bank)
        renderer = Renderer(self.bank, 1, self.constants.STEPS, self.constants.CFG, self.family.arch.sampler, self.family.arch.scheduler)
        out = {}
        # SurgUn as the node trains it by default: each distractor's own line also retained, shared noise (the
        # samples here are not made from shared noises, which changes what is drawn, not what a step costs)
        su = [ConceptData(g["target"], samples[g["target"]], {d: samples[d] for d in g["distractors"]},
                          {r: samples[r] for r in with_distractors(g["retain"], g["distractors"])}, name)
              for g in baseline_groups(kind, name, chosen)]
        # surgun_model_targets: the node's model_targets option (one more forward pass, without gradients, per step);
        # surgun_concept_levels: concept_levels (the same step, after a profile measured once: its cost is in setup_cpu_s);
        # surgun_adversary: adversary_steps 3 as surgun_adversary runs it (three passes of one image for the soft prompt,
        # the competition's rows twice); surgun_until_erased: ascent_until_erased (a render of each target line every
        # 10th step, the training sampler's first 40 %: the median leaves those steps out, the mean counts them)
        for label, data, meth in (("surgun", su, METHODS["surgun"]), ("surgun_model_targets", su, METHODS["surgun"]),
                                  ("surgun_until_erased", su, METHODS["surgun"]),
                                  ("surgun_concept_levels", su, METHODS["surgun"]), ("surgun_adversary", su, METHODS["surgun"]),
                                  ("esd_x", concept_data("esd_x", kind, name, chosen, samples), METHODS["esd_x"]),
                                  ("ga", concept_data("ga", kind, name, chosen, samples), METHODS["ga"])):
            stamps = []

            def on_step(step, total, metrics):
                stamps.append(time.process_time())

            cfg = TrainConfig(steps=steps + 1, learning_rate=1e-3, weights=meth.weights, ascent_cap=meth.ascent_cap, seed=0,
                              distractors_per_step=2, model_targets=label == "surgun_model_targets",
                              concept_levels=label == "surgun_concept_levels", shared_noise=label.startswith("surgun"),
                              adversary_steps=3 if label == "surgun_adversary" else 0,
                              ascent_until_erased=label == "surgun_until_erased")
            drawn = DrawnProbe(renderer, data, 0) if cfg.ascent_until_erased else None
            t0 = time.process_time()
            train_deltas(self.model, self.bank, data, self.modules, cfg, self.family.arch.checkpoint_units, on_step, loss=meth.loss,
                         drawn=drawn)
            d = [b - a for a, b in zip(stamps, stamps[1:])]
            # setup: everything before the first step ends (the guard's reference, the profile) plus that step
            # the median leaves out the steps that also measure the guard's probe (every 10th); the mean counts them
            out[label] = {"median_cpu_s": statistics.median(d), "mean_cpu_s": statistics.mean(d), "n_steps": len(d),
                          "setup_cpu_s": stamps[0] - t0}
        out["ratio_surgun_to_esd_x"] = out["surgun"]["median_cpu_s"] / out["esd_x"]["median_cpu_s"]
        out["ratio_surgun_model_targets_to_esd_x"] = out["surgun_model_targets"]["median_cpu_s"] / out["esd_x"]["median_cpu_s"]
        out["ratio_surgun_concept_levels_to_esd_x"] = out["surgun_concept_levels"]["median_cpu_s"] / out["esd_x"]["median_cpu_s"]
        out["ratio_surgun_until_erased_to_esd_x_mean"] = out["surgun_until_erased"]["mean_cpu_s"] / out["esd_x"]["mean_cpu_s"]
        out["ratio_surgun_adversary_to_esd_x"] = out["surgun_adversary"]["median_cpu_s"] / out["esd_x"]["median_cpu_s"]
        out["concept_levels_profile_in_steps"] = ((out["surgun_concept_levels"]["setup_cpu_s"] - out["surgun"]["setup_cpu_s"])
                                                  / out["surgun"]["median_cpu_s"])
        return out


# ---------------------------------------------------------------- the plan
def lr_grid(mname: str, s: V2Settings) -> tuple:
    return UCE_LAMBDAS if mname == "uce" else s.lrs


def esd_u_modules(net: torch.nn.Module) -> list[str]:
    """ESD-u's layers (ESD's ``noxattn``): every weight layer of the network but the cross-attention's, the time
    embedding's and the output layer's, selected by the pattern the variant ``surgun_sp_noxattn`` gives SurgUn Train."""
    from ...surgun_core.selection import select_trainable

    return select_trainable(net, NOXATTN)


def attack_lrs(done: dict, kind: str, t: str, mname: str) -> list:
    """The lrs method ``mname`` is attacked at on target ``t``: its best lr for the kind so far (highest mean H over the
    grid runs of every target of the kind done before), and the lr its row of "Where SurgUn stands" shows for ``t``
    (``report_v2.standing_lr``): the same lr for a gradient method, UCE's best lambda for the target, which differs
    from the kind's where one lambda does not suit every target."""
    from .report_v2 import best_table, standing_lr, summarise

    best = best_table(summarise(done))
    lrs = [best.get((kind, mname), (None,))[0], standing_lr(done, best, mname, t)]
    return list(dict.fromkeys(lr for lr in lrs if lr is not None))


def run(y: Yardstick, targets, s: V2Settings, out: Path) -> None:
    done = y.done
    if "paraphrase_forms||||" not in done and s.attacks:
        y.record({"phase": "paraphrase_forms", "forms": y.measure_paraphrases()})
    measured = done.get("paraphrase_forms||||", {}).get("forms", {})
    for kind, name in targets:
        t = f"{kind}:{name}"
        ukey = f"untouched|{t}|||"
        if ukey not in done:
            chosen = y.choose_distractors(kind, name)
            related = y.related(kind, name)
            forms = y.attack_forms(kind, name, chosen["names"], measured)
            y.check_held_out(kind, name, chosen["names"], related, forms)
            m = y.evaluate2(y.model, kind, name, chosen["names"], related)
            y.record({"phase": "untouched", "target": t, "kind": kind, "distractors": chosen, "related": related,
                      "attack_forms": forms, **m})
            log.info(f"[SurgUn] [{t}] untouched UA {m['UA']:.3f} IRA {m['IRA']:.3f} CRA {m['CRA']:.3f}; "
                     f"distractors {chosen['names']}, related {related}, paraphrase forms {forms}")
        u = done[ukey]
        chosen, related = u["distractors"]["names"], u["related"]
        y.check_held_out(kind, name, chosen, related, u["attack_forms"])
        if any(V2_METHODS[m].protect_related for m in s.methods):
            log.info(f"[SurgUn] [{t}] distractors with the related concepts protected: {y.protected_distractors(kind, name, related)}")
        if s.attacks:
            attack(y, s, kind, name, "untouched", None, None, u)
        for mname in s.methods:
            if V2_METHODS[mname].records_only:
                continue  # its records are what there is (methods_v2.V2Method.records_only)
            seeds = s.seeds[:1] if mname == "uce" else s.seeds  # closed form: no training seed
            for lr in lr_grid(mname, s):
                for seed in seeds:
                    rec = {"phase": "grid", "target": t, "kind": kind, "method": mname, "lr": lr, "seed": seed}
                    if run_key(rec) in done:
                        continue
                    t0 = time.perf_counter()
                    erased, info = y.train(mname, kind, name, y.distractors_of(mname, kind, name, u), lr, seed)
                    t_train = time.perf_counter() - t0
                    m = y.evaluate2(erased, kind, name, chosen, related)
                    for k in ("IRA", "CRA", "related_IRA", "kept_on_target"):
                        m[f"{k}_rel"] = m[k] / u[k] if u[k] else None
                    y.record({**rec, **m, **info, "train_s": round(t_train, 1), "wall_s": round(time.perf_counter() - t0, 1)})
                    log.info(f"[SurgUn]   {mname:14s} lr {lr:.0e} seed {seed}: UA {m['UA']:.3f} IRA {m['IRA']:.3f} "
                             f"CRA {m['CRA']:.3f} H {m['H']:.3f} related {m['related_IRA']:.3f} spread {m['mode_spread_bits']:.2f} "
                             f"({t_train:.0f} s train)")
            if s.attacks:
                for lr in attack_lrs(done, kind, t, mname):
                    for seed in seeds:
                        attack(y, s, kind, name, mname, lr, seed, u)


def pixel_backfill(y: Yardstick, targets, s: V2Settings) -> None:
    """Phase ``pixel``: the methods ``s.methods`` (the CLI's default: the rows of "Where SurgUn stands") rerun at the lr
    such a row shows and the seeds their grid runs there used, for the pixel retain that grid runs made before it
    existed lack; seed-major, so a part cut short leaves whole seeds. Each record repeats the classifier's metrics, so
    the rerun can be checked against the grid run (``same_as_grid``); per target also the untouched model's floor."""
    from .report_v2 import best_table, records_at, standing_lr, summarise

    done = y.done
    best = best_table(summarise(done))
    for kind, name in targets:
        t = f"{kind}:{name}"
        u = done[f"untouched|{t}|||"]
        rec = {"phase": "pixel", "target": t, "kind": kind, "method": "untouched"}
        if run_key(rec) not in done:
            y.record({**rec, **y.pixel_floor(kind, name, u["distractors"]["names"], u["related"])})
    for seed in s.seeds:
        for kind, name in targets:
            t = f"{kind}:{name}"
            u = done[f"untouched|{t}|||"]
            chosen, related = u["distractors"]["names"], u["related"]
            for mname in s.methods:
                lr = standing_lr(done, best, mname, t)
                grid = [r for r in records_at(done, "grid", t, mname, lr) if r["seed"] == seed]
                rec = {"phase": "pixel", "target": t, "kind": kind, "method": mname, "lr": lr, "seed": seed}
                if not grid or "pixel_retain" in grid[0] or run_key(rec) in done:
                    continue
                t0 = time.perf_counter()
                erased, _ = y.train(mname, kind, name, y.distractors_of(mname, kind, name, u), lr, seed)
                m = y.evaluate2(erased, kind, name, chosen, related)
                for k in ("IRA", "CRA", "related_IRA", "kept_on_target"):
                    m[f"{k}_rel"] = m[k] / u[k] if u[k] else None
                same = all(math.isclose(m[k], grid[0][k]) for k in ("UA", "IRA", "CRA", "related_IRA", "kept_on_target"))
                y.record({**rec, **m, "same_as_grid": same, "wall_s": round(time.perf_counter() - t0, 1)})
                log.info(f"[SurgUn]   pixel {t} {mname:22s} lr {lr:.0e} seed {seed}: pixel retain {m['pixel_retain']:.3f} "
                         f"related {m['pixel_related']:.3f}; UA {m['UA']:.3f} H {m['H']:.3f} (grid {grid[0]['H']:.3f}, "
                         f"{'same' if same else 'DIFFERENT'}) ({time.perf_counter() - t0:.0f} s)")


def attack(y: Yardstick, s: V2Settings, kind: str, name: str, mname: str, lr, seed, u: dict) -> None:
    t = f"{kind}:{name}"
    rec = {"phase": "attack", "target": t, "kind": kind, "method": mname, "lr": lr, "seed": seed}
    if run_key(rec) in y.done or (mname != "untouched" and lr is None):
        return
    t0 = time.perf_counter()
    model = y.model if mname == "untouched" else y.train(mname, kind, name, y.distractors_of(mname, kind, name, u), lr, seed)[0]
    a = y.soft_attack(model, kind, name)
    a.update(y.paraphrase_attack(model, kind, name, u["attack_forms"]))
    y.record({**rec, **a, "wall_s": round(time.perf_counter() - t0, 1)})
    log.info(f"[SurgUn]   attack {mname:14s} lr {lr} seed {seed}: " + " ".join(
        f"{k} {v:.3f}" for k, v in a.items() if not k.endswith("n_images")) + f" ({time.perf_counter() - t0:.0f} s)")


# ---------------------------------------------------------------- CLI
def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI: SurgUn (the node) on 2 targets, held-out metrics, loose bounds")
    ap.add_argument("--targets", default=None, help="file or comma list of kind:name (default targets.txt)")
    ap.add_argument("--methods", default=None, help=f"comma list of {', '.join(V2_METHODS)}")
    ap.add_argument("--first-seeds", type=int, default=None, help="only the first N of the seeds 0,1,2")
    ap.add_argument("--lrs", default=None, help="comma list (default 1e-4..1e-2 in half-decades; UCE has its own lambda grid)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--no-attacks", action="store_true", help="skip the attack phase (and the paraphrase measurement)")
    ap.add_argument("--report-only", action="store_true", help="rewrite the md/json/PNGs from the JSONL and exit")
    ap.add_argument("--speed", action="store_true", help="only measure CPU s per step, SurgUn vs ESD-x vs GA (median of 25)")
    ap.add_argument("--embed-floor", action="store_true", help="only measure whether the localiser's score sees a complete erasure above its noise floor, per target")
    ap.add_argument("--probe-cost", action="store_true", help="only measure CPU s of the Block Localizer node vs the SurgUn Train node it steers")
    ap.add_argument("--pixel", action="store_true", help="only rerun the standing table's runs that lack the pixel retain "
                    "score (phase pixel; --methods and --first-seeds narrow it)")
    ap.add_argument("--out", type=Path, default=None, help="default benchmarks/results (quick: benchmarks/results/quick)")
    ap.add_argument("--weights", default=None)
    return ap.parse_args(argv)


def main(argv=None) -> None:
    from .report_v2 import check_quick_v2, write_report

    argv = list(sys.argv[1:] if argv is None else argv)
    setup_logging()
    args = parse_args(argv)
    s = quick_v2() if args.quick else V2Settings()
    if args.methods:
        s.methods = tuple(m.strip() for m in args.methods.split(","))
        bad = [m for m in s.methods if m not in V2_METHODS]
        if bad:
            raise SystemExit(f"unknown methods {bad}; choose from {list(V2_METHODS)}")
        old = [m for m in s.methods if V2_METHODS[m].records_only]
        if old and not args.report_only:
            raise SystemExit(f"{old[0]} cannot be run again ({V2_METHODS[old[0]].records_only}); "
                             f"run 'surgun' for SurgUn as it is now, or add --report-only to report its records")
    if args.first_seeds:
        s.seeds = s.seeds[:args.first_seeds]
    if args.lrs:
        s.lrs = tuple(float(x) for x in args.lrs.split(","))
    if args.steps:
        s.steps = args.steps
    if args.no_attacks:
        s.attacks = False
    out = args.out or (RESULTS / "quick" if s.quick else RESULTS)  # results/quick/ is not committed
    stem = "toy_canvas_v2_quick" if s.quick else "toy_canvas_v2"
    jsonl = out / stem / "runs.jsonl"
    targets = read_targets(args.targets)
    if s.quick and not args.targets:
        targets = [next(t for t in targets if t[0] == k) for k in ("style", "object")]
    if args.report_only:
        write_report(jsonl, out, stem, s, targets)
        return
    torch.set_num_threads(1)
    t0 = time.perf_counter()
    y = Yardstick(s, args.weights)
    if args.embed_floor:
        res = y.embed_floor(targets)
        (out / stem).mkdir(parents=True, exist_ok=True)
        (out / stem / "embed_floor.json").write_text(json.dumps(res, indent=1))
        return
    for flag, measure, fname in ((args.probe_cost, y.probe_cost, "probe_cost.json"), (args.speed, y.speed, "speed.json")):
        if flag:  # one measurement on the first target, written beside the results
            kind, name = targets[0]
            res = measure(kind, name, y.choose_distractors(kind, name)["names"])
            (out / stem).mkdir(parents=True, exist_ok=True)
            (out / stem / fname).write_text(json.dumps(res, indent=1))
            log.info(json.dumps(res, indent=1))
            return
    if s.quick and jsonl.exists():  # CI checks this code, not an earlier run's records
        jsonl.unlink()
    y.load(jsonl)
    gkey = "gate||||"
    if gkey not in y.done:
        g = y.gate.run_gate(y.model, y.clip, y.vae, y.classifier, images_per_prompt=1 if s.quick else 2)
        y.record({"phase": "gate", **{k: g[k] for k in ("object_accuracy", "style_accuracy", "n_images", "passed")}})
    if args.pixel:
        if not args.methods:
            from .report_v2 import STANDING
            s.methods = tuple(m for m, _ in STANDING)
        pixel_backfill(y, targets, s)
    else:
        run(y, targets, s, out)
    report = write_report(jsonl, out, stem, s, targets, wall_s=time.perf_counter() - t0)
    if s.quick:
        check_quick_v2(report)


if __name__ == "__main__":
    main()
