"""Toy canvas erasure benchmark, the runs: SurgUn against its ablations, ESD-x, GA and CA.

An analogue of UnlearnCanvas on the toy world (8 objects x 8 styles): for each target (a style
or an object) every method trains the same layers (the cross-attention preset), for the same
number of steps, from the same self-generated samples and seeds, through ``surgun_core`` and
the pack's bridge; the erased model is then sampled with the shipped sampler settings and
classified.

Metrics per target (UnlearnCanvas definitions):

* **UA**: share of target-prompt images *not* classified as the target;
* **IRA**: other concepts of the same kind still classified correctly (prompts without the target);
* **CRA**: the other attribute still correct on those same prompts (object for a style target,
  style for an object target); ``cra_on_target`` is the same on the target's own prompts;
* **H**: harmonic mean of UA, IRA and CRA;
* IRA and CRA are also given relative to the untouched model on the same prompts and seeds;
* **attack**: a soft prompt (the cross-attention context) is optimised to make the erased model
  reproduce the target's original samples; recovery = share of its images classified as the target,
  at two attack strengths (steps).

The command line is in ``erasure.py``; the tables and grids in ``report.py``.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from ...surgun_comfy.deltas import TrainableDeltas
from ...surgun_comfy.families import detect_family
from ...surgun_comfy.localize import LocalizeRequest
from ...surgun_comfy.probe import run_localizer
from ...surgun_comfy.losses import draw_sigmas, objective_weight
from ...surgun_comfy.prompts import PromptBank
from ...surgun_comfy.render import latent_shape_for
from ...surgun_comfy.training import train_deltas
from ...surgun_core.distractors import DistractorParams, build_distractor_set
from ...surgun_core.localize import SelectConfig
from ...surgun_core.selection import select_trainable
from ...surgun_core.train import TrainConfig
from ...surgun_core.weights import delta_key
from .baselines import METHODS, method_data
from .report import save_grid

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
RESULTS = REPO / "benchmarks" / "results"
TARGETS_FILE = HERE / "targets.txt"
log = logging.getLogger("surgun.bench.toy_canvas")
METHOD_ORDER = ["surgun", "surgun_no_distractor", "surgun_one_distractor", "esd_x", "ga", "ca"]


@dataclass
class Settings:
    steps: int = 60
    lrs: tuple = (3e-4, 1e-3, 3e-3)
    """One grid for every method: on this model GA already erases at 3e-4 and collapses at 3e-3,
    ESD-x barely moves at 3e-4, so each method gets a UA-versus-retain curve over the grid."""
    seeds: tuple = (0, 1)
    methods: tuple = tuple(METHOD_ORDER)
    k_distractors: int = 3
    train_per_prompt: int = 1
    eval_target_per_prompt: int = 2
    eval_other_per_prompt: int = 1
    eval_other_stride: int = 4
    """Retain prompts (those without the target): the (object, style) pairs on every ``stride``-th diagonal."""
    attack_steps: tuple = (40, 150)
    attack_lr: float = 1e-2
    attack_prompts: int = 1
    attack_images: int = 8
    attack_all_seeds: bool = False
    """The attack runs on the first seed's erased model of every method and lr (it costs as much as an evaluation)."""
    eval_seed: int = 777
    localize: bool = True
    """Also run SurgUn on the blocks chosen by the Block Localizer ("surgun_localized")."""
    localize_keep: int = 4
    localize_probe_steps: int = 10
    localize_images_per_prompt: int = 2
    grids: bool = True
    """Write before/after PNG grids for the first style and the first object target (seed 0, middle lr)."""
    quick: bool = False


def quick_settings() -> Settings:
    return Settings(steps=80, lrs=(1e-3,), seeds=(0,), methods=("surgun",), train_per_prompt=1,
                    eval_target_per_prompt=2, eval_other_per_prompt=1, attack_steps=(), localize=False, grids=False,
                    quick=True)


def read_targets(spec: str | None) -> list[tuple[str, str]]:
    """``kind:name`` items from a file (one per line, ``#`` comments) or a comma list."""
    text = spec if spec and not Path(spec).is_file() else (Path(spec) if spec else TARGETS_FILE).read_text()
    out = []
    for line in text.splitlines():
        for item in line.split("#")[0].split(","):
            item = item.strip()
            if not item:
                continue
            kind, _, name = item.partition(":")
            if kind.strip() not in ("style", "object") or not name.strip():
                raise SystemExit(f"bad target {item!r}: write kind:name with kind 'style' or 'object', e.g. style:dots")
            out.append((kind.strip(), name.strip()))
    return out


def first_per_kind(targets: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """The first style and the first object of ``targets`` (those present)."""
    return [next(t for t in targets if t[0] == kind) for kind in ("style", "object") if any(t[0] == kind for t in targets)]


def grid_name(kind: str, name: str) -> str:
    return f"toy_canvas_grid_{kind}_{name}.png"


def harmonic(*xs: float) -> float:
    return 0.0 if any(x <= 0 for x in xs) else len(xs) / sum(1 / x for x in xs)


class Bench:
    def __init__(self, settings: Settings, weights: str | None = None):
        if str(REPO / "scripts") not in sys.path:
            sys.path.insert(0, str(REPO / "scripts"))
        import headless

        self.s = settings
        self.comfy = headless.start()
        from . import classifier as cls_mod
        from . import constants, gate, world
        from .model import load_toy_canvas

        self.world, self.constants, self.cls_mod, self.gate = world, constants, cls_mod, gate
        with torch.inference_mode():
            self.model, self.clip, self.vae = load_toy_canvas(weights) if weights else load_toy_canvas()
        self.classifier = cls_mod.load_classifier()
        self.family = detect_family(self.model)
        self.modules = select_trainable(self.model.model.diffusion_model, self.family.preset("cross_attention"))
        self.bank = PromptBank(self.clip, self.model, latent_shape_for(self.model, constants.WIDTH), torch.device("cpu"))
        self.step_times: dict[str, list[float]] = {}
        self.grid_targets: set[tuple[str, str]] = set()
        """Targets that get a before/after PNG grid."""
        self.grid_dir: Path = RESULTS
        self.progress_path: Path | None = None

    # ---------------------------------------------------------------- sampling
    def sample(self, model, prompts: list[str], seed: int, contexts: dict | None = None) -> torch.Tensor:
        """Latents for ``prompts`` (one each) with the shipped sampler settings (the gate's sampler);
        ``contexts`` maps a prompt to a replacement cross-attention context (the attack)."""
        conds = {}
        for p in dict.fromkeys(prompts):
            cond, extra = self.bank.conditioning(p)[0]
            conds[p] = [[contexts[p] if contexts and p in contexts else cond, extra]]
        with torch.inference_mode():
            return self.gate.sample_latents(model, conds, self.bank.conditioning(self.constants.NEGATIVE_PROMPT), prompts, seed)

    def classify(self, latents: torch.Tensor) -> dict:
        with torch.inference_mode():
            images = self.vae.decode(latents).float().cpu()
        return self.cls_mod.classify(self.classifier, images)

    def grid_row(self, model, kind: str, name: str) -> torch.Tensor:
        """One grid row: the target's 8 prompts, then 4 prompts without it (retain), fixed seeds."""
        w = self.world
        names = w.STYLES if kind == "style" else w.OBJECTS
        others = [n for n in names if n != name][:4]
        retain = [w.prompt_for(w.OBJECTS[i], n) if kind == "style" else w.prompt_for(n, w.STYLES[i]) for i, n in enumerate(others)]
        with torch.inference_mode():
            return self.vae.decode(self.sample(model, self.prompts_of(kind, name) + retain, self.s.eval_seed)).float().cpu()

    # ---------------------------------------------------------------- concepts
    def prompts_of(self, kind: str, name: str) -> list[str]:
        w = self.world
        if kind == "style":
            return [w.prompt_for(o, name) for o in w.OBJECTS]
        return [w.prompt_for(name, s) for s in w.STYLES]

    def others(self, kind: str, name: str) -> list[str]:
        names = self.world.STYLES if kind == "style" else self.world.OBJECTS
        return [n for n in names if n != name]

    def concept_prompt(self, kind: str, name: str) -> str:
        """ESD's concept-only prompt."""
        return f"{name} style" if kind == "style" else f"a {name}"

    def choose_distractors(self, kind: str, name: str, protected=()) -> dict:
        """SurgUn's algorithm on the toy world: a concept is embedded as the mean of its 8 prompts
        (``protected``: concepts never chosen, the Distractor Builder's input of that name)."""
        with torch.inference_mode():
            def embed(names):
                rows = []
                for n in names:
                    e = torch.stack([self.bank.conditioning(p)[0][1]["pooled_output"][0].float() for p in self.prompts_of(kind, n)])
                    rows.append(e.mean(0))
                return torch.stack(rows)

            chosen = build_distractor_set(
                name, "custom", embed, DistractorParams(k=self.s.k_distractors), candidates=self.others(kind, name),
                use_pool=False, protected=list(protected))
        return {"names": chosen.names, "sim_to_target": chosen.sim_to_target}

    @staticmethod
    def swap(prompt: str, kind: str, name: str, other: str) -> str:
        """``prompt`` with the concept ``name`` replaced by ``other`` (the other attribute kept)."""
        if kind == "style":
            return prompt.replace(f" in {name} style", f" in {other} style")
        return prompt.replace(f"a {name} in", f"a {other} in")

    def groups(self, method, kind: str, name: str, chosen: list[str], samples: dict) -> list:
        """One training group per target prompt: its distractors are the same prompt with the
        distractor concept swapped in (so the other attribute is shared), its retain prompts are
        every prompt that contains neither the target nor a distractor."""
        w = self.world
        out = []
        blocked = {name, *chosen}
        retain_prompts = [w.prompt_for(o, s) for o in w.OBJECTS for s in w.STYLES if o not in blocked and s not in blocked]
        for p in self.prompts_of(kind, name):
            swap = {d: self.swap(p, kind, name, d) for d in chosen}
            distractors = {swap[d]: samples[swap[d]] for d in chosen}
            retain = {r: samples[r] for r in retain_prompts}
            md = method_data(method, p, samples[p], distractors, retain, anchor=swap[chosen[0]],
                                          concept_prompt=self.concept_prompt(kind, name))
            out.append(md.data)
        return out

    # ---------------------------------------------------------------- metrics
    def evaluate(self, model, kind: str, name: str) -> dict:
        w = self.world
        target_prompts = self.prompts_of(kind, name) * self.s.eval_target_per_prompt
        # every stride-th diagonal of the object x style table: each object and each style appears about equally
        other = [w.prompt_for(o, s) for i, o in enumerate(w.OBJECTS) for j, s in enumerate(w.STYLES)
                 if (s if kind == "style" else o) != name and (i + j) % self.s.eval_other_stride == 0]
        other = other * self.s.eval_other_per_prompt
        cls_t = self.classify(self.sample(model, target_prompts, self.s.eval_seed))
        cls_o = self.classify(self.sample(model, other, self.s.eval_seed + 10_000))
        same, cross = ("style", "object") if kind == "style" else ("object", "style")
        names = {"style": list(w.STYLES), "object": list(w.OBJECTS)}
        t_idx = names[same].index(name)

        truth = w.class_indices

        ua = (cls_t[same] != t_idx).float().mean().item()
        ira = (cls_o[same] == truth(other, same)).float().mean().item()
        cra = (cls_o[cross] == truth(other, cross)).float().mean().item()
        cra_t = (cls_t[cross] == truth(target_prompts, cross)).float().mean().item()
        # per prompted class of the other attribute (e.g. per object): what the target's images show instead,
        # and how many of them still show the target
        confusion: dict = {}
        still: dict = {}
        for prompt, got, kept in zip(target_prompts, cls_t[cross].tolist(), (cls_t[same] == t_idx).tolist()):
            key = w.parse_prompt(prompt)[0 if cross == "object" else 1]
            row = confusion.setdefault(key, {})
            row[names[cross][got]] = row.get(names[cross][got], 0) + 1
            still[key] = still.get(key, 0) + int(kept)
        return {"UA": ua, "IRA": ira, "CRA": cra, "cra_on_target": cra_t, "H": harmonic(ua, ira, cra),
                "n_target_images": len(target_prompts), "n_other_images": len(other), "target_confusion": confusion,
                "target_still_shown": still}

    def attack(self, model, kind: str, name: str, samples: dict) -> dict:
        """Soft-prompt recovery: optimise the context to reproduce the target's original samples."""
        if not self.s.attack_steps:
            return {}
        prompts = self.prompts_of(kind, name)[: self.s.attack_prompts]
        same = "style" if kind == "style" else "object"
        t_idx = (list(self.world.STYLES) if kind == "style" else list(self.world.OBJECTS)).index(name)
        results = {}
        # no layer is trained: TrainableDeltas only loads the model ready for autograd (the context gets the gradient)
        with torch.inference_mode(False), TrainableDeltas(model, []) as td:
            base = td.work.model
            ctxs = {p: self.bank.conditioning(p)[0][0].clone().requires_grad_(True) for p in prompts}
            x0s = {p: base.process_latent_in(samples[p].clone()).clone() for p in prompts}
            opts = {p: torch.optim.Adam([ctxs[p]], lr=self.s.attack_lr) for p in prompts}
            g = torch.Generator().manual_seed(4242)
            done = 0
            for checkpoint in self.s.attack_steps:
                for _ in range(checkpoint - done):
                    for p in prompts:
                        x0 = x0s[p]
                        sigma = draw_sigmas(base.model_sampling, x0.shape[0], g)
                        noise = torch.randn(x0.shape, generator=g)
                        xt = base.model_sampling.noise_scaling(sigma, noise, x0)
                        pred = base.apply_model(xt, sigma, c_crossattn=ctxs[p].expand(x0.shape[0], -1, -1))
                        loss = ((pred - x0).pow(2).flatten(1).mean(1) * objective_weight(base.model_sampling, sigma)).mean()
                        opts[p].zero_grad()
                        loss.backward()
                        opts[p].step()
                done = checkpoint
                contexts = {p: ctxs[p].detach().clone() for p in prompts}
                eval_prompts = [p for p in prompts for _ in range(self.s.attack_images)]
                cls = self.classify(self.sample(model, eval_prompts, self.s.eval_seed + 20_000, contexts))
                results[f"recovered@{checkpoint}"] = (cls[same] == t_idx).float().mean().item()
            results["n_images"] = len(prompts) * self.s.attack_images
        return results

    # ---------------------------------------------------------------- localisation
    def localize(self, kind: str, name: str, chosen: list[str]) -> tuple[list[str], dict]:
        """The Block Localizer on this target (its first two prompts, one held out), through the pack's bridge."""
        w = self.world
        lines = [self.swap(p, kind, name, "{" + name + "}") for p in self.prompts_of(kind, name)[:2]]
        retain = tuple(w.prompt_for(o, st) for o, st in [(w.OBJECTS[i], w.STYLES[(i * 3 + 1) % 8]) for i in range(8)]
                       if o != name and st != name and st not in chosen and o not in chosen)[:4]
        req = LocalizeRequest(
            targets=tuple(lines), distractors=tuple(chosen), retain=retain, granularity="attention", max_blocks=0,
            probe_steps=self.s.localize_probe_steps, learning_rate=1e-3, train_steps=self.s.steps,
            select=SelectConfig(keep=self.s.localize_keep), images_per_prompt=self.s.localize_images_per_prompt,
            render_steps=self.constants.STEPS, render_size=self.constants.WIDTH, render_cfg=self.constants.CFG, seed=5)
        t0 = time.perf_counter()
        result, blocks = run_localizer(self.model, self.clip, self.vae, None, req)
        modules = select_trainable(self.model.model.diffusion_model, blocks.names)
        return modules, {"blocks": blocks.names, "layers": len(modules), "wall_s": round(time.perf_counter() - t0, 1),
                         "table": [{k: r[k] for k in ("block", "erase", "retain", "chosen")} for r in result.table()]}

    # ---------------------------------------------------------------- runs
    def erase(self, method, groups: list, lr: float, seed: int, modules: list[str] | None = None, label: str | None = None):
        cfg = TrainConfig(steps=self.s.steps, learning_rate=lr, weights=method.weights, ascent_cap=method.ascent_cap,
                                     seed=seed, distractors_per_step=2)
        t0 = time.perf_counter()
        deltas, result = train_deltas(self.model, self.bank, groups, modules or self.modules, cfg,
                                                  self.family.arch.checkpoint_units, loss=method.loss)
        self.step_times.setdefault(label or method.name, []).append((time.perf_counter() - t0) / self.s.steps)
        import comfy.sd

        erased, _ = comfy.sd.load_lora_for_models(self.model, None, {delta_key(n): d for n, d in deltas.items()}, 1.0, 0)
        return erased, result


def run_targets(bench: "Bench", targets: list[tuple[str, str]]) -> dict:
    """Every method on every target (the work one process does); returns runs, baselines, timings."""
    s = bench.s
    w = bench.world
    all_prompts = [w.prompt_for(o, st) for o in w.OBJECTS for st in w.STYLES]
    t0 = time.perf_counter()
    train_latents = bench.sample(bench.model, [p for p in all_prompts for _ in range(s.train_per_prompt)], seed=31337)
    samples = {p: train_latents[i * s.train_per_prompt:(i + 1) * s.train_per_prompt] for i, p in enumerate(all_prompts)}
    sampling_s = time.perf_counter() - t0

    runs, baselines = [], {}
    grid_lr = s.lrs[len(s.lrs) // 2]
    for kind, name in targets:
        rows = {"untouched": bench.grid_row(bench.model, kind, name)} if (kind, name) in bench.grid_targets else None
        chosen = bench.choose_distractors(kind, name)
        base = bench.evaluate(bench.model, kind, name)
        base.update(bench.attack(bench.model, kind, name, samples))
        baselines[f"{kind}:{name}"] = {**base, "distractors": chosen}
        log.info(f"[SurgUn] [{kind}:{name}] untouched UA {base['UA']:.3f} IRA {base['IRA']:.3f} CRA {base['CRA']:.3f}; distractors {chosen['names']}")
        plan = [(m, m, None) for m in s.methods]
        if s.localize:
            modules, info = bench.localize(kind, name, chosen["names"])
            baselines[f"{kind}:{name}"]["localizer"] = info
            log.info(f"[SurgUn]   localizer kept {info['blocks']} ({info['wall_s']} s)")
            plan.append(("surgun_localized", "surgun", modules))
        for label, mname, modules in plan:
            method = METHODS[mname]
            groups = bench.groups(method, kind, name, chosen["names"], samples)
            for lr in s.lrs:
                for seed in s.seeds:
                    erased, result = bench.erase(method, groups, lr, seed, modules, label)
                    m = bench.evaluate(erased, kind, name)
                    m["IRA_rel"] = m["IRA"] / base["IRA"] if base["IRA"] else None
                    m["CRA_rel"] = m["CRA"] / base["CRA"] if base["CRA"] else None
                    if s.attack_all_seeds or seed == s.seeds[0]:
                        m.update(bench.attack(erased, kind, name, samples))
                    m.update({"target": f"{kind}:{name}", "kind": kind, "method": label, "lr": lr, "seed": seed,
                              "final_loss": result.history[-1]["loss"]})
                    runs.append(m)
                    if bench.progress_path:  # partial results survive a crash of a long run
                        with open(bench.progress_path, "a") as f:
                            f.write(json.dumps(m) + "\n")
                    if rows is not None and lr == grid_lr and seed == s.seeds[0]:
                        rows[label] = bench.grid_row(erased, kind, name)
                    log.info(f"[SurgUn]   {label:22s} lr {lr:.0e} seed {seed}: UA {m['UA']:.3f} IRA {m['IRA']:.3f} CRA {m['CRA']:.3f} H {m['H']:.3f}"
                          + (f" rec@{s.attack_steps[-1]} {m.get(f'recovered@{s.attack_steps[-1]}', float('nan')):.3f}" if s.attack_steps else ""))
        if rows is not None:
            path = bench.grid_dir / grid_name(kind, name)
            save_grid(rows, path, f"{kind} '{name}': 8 target prompts | 4 retain prompts; lr {grid_lr:.0e}, seed {s.seeds[0]}")
            log.info(f"[SurgUn]   grid -> {path}")
    return {"runs": runs, "untouched": baselines, "step_times": bench.step_times, "training_samples_s": round(sampling_s, 1)}
