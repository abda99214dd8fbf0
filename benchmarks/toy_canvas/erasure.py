"""Toy canvas erasure benchmark: SurgUn against its ablations, ESD-x, GA and CA, in one run.

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

Run:  scripts/bench.sh toy_canvas_erasure [--quick] [--targets style:dots,object:star] [--seeds 0,1]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

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
        self.bridge = self.comfy.node_module("SurgUnTrain", "bridge")
        self.families = self.comfy.node_module("SurgUnTrain", "families")
        self.methods = self.comfy.pack_module("surgun_core.methods")
        self.train = self.comfy.pack_module("surgun_core.train")
        self.selection = self.comfy.pack_module("surgun_core.selection")
        self.distractors = self.comfy.pack_module("surgun_core.distractors")
        self.family = self.families.detect_family(self.model)
        self.modules = self.selection.select_trainable(self.model.model.diffusion_model, self.family.preset("cross_attention"))
        shape = self.bridge.latent_shape_for(self.model, constants.WIDTH)
        self.bank = self.bridge.PromptBank(self.clip, self.model, shape, torch.device("cpu"))
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

    def choose_distractors(self, kind: str, name: str) -> dict:
        """SurgUn's algorithm on the toy world: a concept is embedded as the mean of its 8 prompts."""
        with torch.inference_mode():
            def embed(names):
                rows = []
                for n in names:
                    e = torch.stack([self.bank.conditioning(p)[0][1]["pooled_output"][0].float() for p in self.prompts_of(kind, n)])
                    rows.append(e.mean(0))
                return torch.stack(rows)

            chosen = self.distractors.build_distractor_set(
                name, "custom", embed, self.distractors.DistractorParams(k=self.s.k_distractors), candidates=self.others(kind, name),
                use_pool=False)
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
            md = self.methods.method_data(method, p, samples[p], distractors, retain, anchor=swap[chosen[0]],
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

        def truth(prompts, attr):
            out = []
            for p in prompts:
                obj, sty = p[2:].split(" in ")
                out.append(names[attr].index(obj if attr == "object" else sty[: -len(" style")]))
            return torch.tensor(out)

        ua = (cls_t[same] != t_idx).float().mean().item()
        ira = (cls_o[same] == truth(other, same)).float().mean().item()
        cra = (cls_o[cross] == truth(other, cross)).float().mean().item()
        cra_t = (cls_t[cross] == truth(target_prompts, cross)).float().mean().item()
        return {"UA": ua, "IRA": ira, "CRA": cra, "cra_on_target": cra_t, "H": harmonic(ua, ira, cra),
                "n_target_images": len(target_prompts), "n_other_images": len(other)}

    def attack(self, model, kind: str, name: str, samples: dict) -> dict:
        """Soft-prompt recovery: optimise the context to reproduce the target's original samples."""
        if not self.s.attack_steps:
            return {}
        prompts = self.prompts_of(kind, name)[: self.s.attack_prompts]
        same = "style" if kind == "style" else "object"
        t_idx = (list(self.world.STYLES) if kind == "style" else list(self.world.OBJECTS)).index(name)
        results = {}
        # no layer is trained: TrainableDeltas only loads the model ready for autograd (the context gets the gradient)
        with torch.inference_mode(False), self.bridge.TrainableDeltas(model, []) as td:
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
                        sigma = self.bridge.draw_sigmas(base.model_sampling, x0.shape[0], g)
                        noise = torch.randn(x0.shape, generator=g)
                        xt = base.model_sampling.noise_scaling(sigma, noise, x0)
                        pred = base.apply_model(xt, sigma, c_crossattn=ctxs[p].expand(x0.shape[0], -1, -1))
                        loss = ((pred - x0).pow(2).flatten(1).mean(1) * self.bridge.objective_weight(base.model_sampling, sigma)).mean()
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
        """The Block Localizer on this target (its first prompt), through the pack's bridge."""
        lb = self.comfy.node_module("SurgUnBlockLocalizer", "localize_bridge")
        localize = self.comfy.pack_module("surgun_core.localize")
        p = self.prompts_of(kind, name)[0]
        w = self.world
        retain = tuple(w.prompt_for(o, st) for o, st in [(w.OBJECTS[i], w.STYLES[(i * 3 + 1) % 8]) for i in range(8)]
                       if o != name and st != name and st not in chosen and o not in chosen)[:4]
        req = lb.LocalizeRequest(
            target=p, distractors=tuple(self.swap(p, kind, name, d) for d in chosen), retain=retain, granularity="attention", max_blocks=0,
            probe_steps=self.s.localize_probe_steps, probe_lr=1e-3, select=localize.SelectConfig(keep=self.s.localize_keep),
            images_per_prompt=self.s.localize_images_per_prompt, render_steps=self.constants.STEPS, render_size=self.constants.WIDTH, render_cfg=self.constants.CFG,
            seed=5)
        t0 = time.perf_counter()
        result, blocks = lb.run_localizer(self.model, self.clip, self.vae, None, req)
        modules = self.selection.select_trainable(self.model.model.diffusion_model, blocks.names)
        return modules, {"blocks": blocks.names, "layers": len(modules), "wall_s": round(time.perf_counter() - t0, 1),
                         "table": [{k: r[k] for k in ("block", "erase", "retain", "chosen")} for r in result.table()]}

    # ---------------------------------------------------------------- runs
    def erase(self, method, groups: list, lr: float, seed: int, modules: list[str] | None = None, label: str | None = None):
        cfg = self.train.TrainConfig(steps=self.s.steps, learning_rate=lr, weights=method.weights, ascent_cap=method.ascent_cap,
                                     seed=seed, distractors_per_step=2)
        t0 = time.perf_counter()
        deltas, result = self.bridge.train_deltas(self.model, self.bank, groups, modules or self.modules, cfg,
                                                  self.family.arch.checkpoint_units, loss=method.loss, esd_eta=method.esd_eta)
        self.step_times.setdefault(label or method.name, []).append((time.perf_counter() - t0) / self.s.steps)
        import comfy.sd

        erased, _ = comfy.sd.load_lora_for_models(self.model, None, {f"diffusion_model.{n}.diff": d for n, d in deltas.items()}, 1.0, 0)
        return erased, result


def save_grid(rows: dict, path: Path, title: str, scale: int = 3) -> None:
    """A labelled PNG: one row per method (ComfyUI IMAGE tensors, (N, H, W, 3) in [0, 1]),
    upscaled ``scale``x with nearest neighbour so single pixels stay visible."""
    from PIL import Image, ImageDraw

    n, h, w, _ = next(iter(rows.values())).shape
    cell, gap, label_w, title_h = w * scale, 2, 150, 18
    split = 8  # target prompts | retain prompts
    width = label_w + n * (cell + gap) + 6
    canvas = Image.new("RGB", (width, title_h + len(rows) * (h * scale + gap)), "white")
    draw = ImageDraw.Draw(canvas)
    draw.text((4, 3), title, fill="black")
    for r, (label, images) in enumerate(rows.items()):
        y = title_h + r * (h * scale + gap)
        draw.text((4, y + h * scale // 2 - 5), label, fill="black")
        for i in range(images.shape[0]):
            x = label_w + i * (cell + gap) + (6 if i >= split else 0)
            arr = (images[i].clamp(0, 1) * 255).round().to(torch.uint8).numpy()
            canvas.paste(Image.fromarray(arr).resize((cell, h * scale), Image.NEAREST), (x, y))
    path.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(path)


def summarise(rows: list[dict]) -> dict:
    out = {}
    for key in ("UA", "IRA", "CRA", "H", "IRA_rel", "CRA_rel", "cra_on_target", "recovered@40", "recovered@150"):
        vals = [r[key] for r in rows if key in r and r[key] is not None and not (isinstance(r[key], float) and math.isnan(r[key]))]
        if vals:
            out[key] = {"mean": statistics.mean(vals), "sd": statistics.pstdev(vals) if len(vals) > 1 else 0.0, "n": len(vals)}
    return out


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
            method = bench.methods.METHODS[mname]
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


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="CI sanity mode: gate + SurgUn on two targets, loose bounds")
    ap.add_argument("--targets", default=None, help="file or comma list of kind:name (default: targets.txt; quick: 2 targets)")
    ap.add_argument("--seeds", default=None, help="comma list (default 0,1)")
    ap.add_argument("--methods", default=None, help="comma list (default: all)")
    ap.add_argument("--lrs", default=None, help="comma list of learning rates (the same grid for every method)")
    ap.add_argument("--steps", type=int, default=None)
    ap.add_argument("--jobs", type=int, default=1, help="worker processes, each taking a share of the targets (one torch thread each)")
    ap.add_argument("--out", type=Path, default=None, help="default: benchmarks/results (quick mode: benchmarks/results/quick, not committed)")
    ap.add_argument("--gate-images-per-prompt", type=int, default=None, help="images per prompt for the model gate (default 4; quick 1)")
    ap.add_argument("--weights", default=None, help="another toy canvas weights file (default: the shipped one)")
    ap.add_argument("--remake-md", type=Path, default=None, help="rewrite the markdown table from a results JSON and exit")
    ap.add_argument("--part", type=Path, default=None, help=argparse.SUPPRESS)  # internal: a worker writes its share here
    ap.add_argument("--all-targets", default=None, help=argparse.SUPPRESS)  # internal: the whole run's targets (grid choice)
    return ap.parse_args(argv)


def settings_from(args) -> Settings:
    s = quick_settings() if args.quick else Settings()
    if args.seeds:
        s.seeds = tuple(int(x) for x in args.seeds.split(","))
    if args.methods:
        s.methods = tuple(args.methods.split(","))
    if args.lrs:
        s.lrs = tuple(float(x) for x in args.lrs.split(","))
    if args.steps:
        s.steps = args.steps
    return s


def forwarded(argv: list[str]) -> list[str]:
    """The command-line options a worker inherits (everything but --jobs, --targets and --out)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a in ("--jobs", "--targets", "--out", "--part", "--all-targets"):
            skip = True
            continue
        if a.startswith(("--jobs=", "--targets=", "--out=", "--part=", "--all-targets=")):
            continue
        out.append(a)
    return out


def setup_logging() -> None:
    """Progress to stdout, whatever level ComfyUI's headless start sets on the root logger."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stdout)
        handler.setFormatter(logging.Formatter("%(message)s"))
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def main(argv=None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    setup_logging()
    args = parse_args(argv)
    if args.remake_md:
        report = json.loads(args.remake_md.read_text())
        args.remake_md.with_suffix(".md").write_text(markdown(report))
        return
    s = settings_from(args)
    args.out = args.out or (RESULTS / "quick" if s.quick else RESULTS)
    targets = read_targets(args.targets)
    if s.quick and not args.targets:  # the first style and the first object of the list
        targets = first_per_kind(targets)
    grid_targets = set(first_per_kind(read_targets(args.all_targets) if args.all_targets else targets)) if s.grids else set()
    if args.part:  # a worker: its share of the targets, no gate, no report
        bench = Bench(s, args.weights)
        bench.grid_targets, bench.grid_dir = grid_targets, args.out
        bench.progress_path = args.part.with_suffix(".jsonl")
        args.part.write_text(json.dumps(run_targets(bench, targets)))
        return
    t_start = time.perf_counter()
    bench = Bench(s, args.weights)
    bench.grid_targets, bench.grid_dir = grid_targets, args.out
    from . import gate

    t0 = time.perf_counter()
    gate_metrics = gate.run_gate(bench.model, bench.clip, bench.vae, bench.classifier,
                                 images_per_prompt=args.gate_images_per_prompt or (1 if s.quick else bench.constants.GATE_IMAGES_PER_PROMPT))
    gate_metrics["wall_s"] = round(time.perf_counter() - t0, 1)
    log.info(f"[SurgUn] [gate] object {gate_metrics['object_accuracy']:.3f} style {gate_metrics['style_accuracy']:.3f} "
          f"({gate_metrics['n_images']} images)")
    if not gate_metrics["passed"] and not s.quick:
        raise SystemExit("the toy model fails its quality gate; results would be meaningless")

    if args.jobs > 1 and len(targets) > 1:
        import subprocess
        import tempfile

        tmp = Path(tempfile.mkdtemp(prefix="toy-canvas-parts-"))
        log.info(f"[SurgUn] {len(targets)} targets on {args.jobs} workers; per-run results stream to {tmp}/*.jsonl")
        shares = [targets[i::args.jobs] for i in range(args.jobs) if targets[i::args.jobs]]
        procs = []
        for i, share in enumerate(shares):
            cmd = [sys.executable, "-m", "benchmarks.toy_canvas.erasure", *forwarded(argv), "--part", str(tmp / f"{i}.json"),
                   "--targets", ",".join(f"{k}:{n}" for k, n in share), "--out", str(args.out),
                   "--all-targets", ",".join(f"{k}:{n}" for k, n in targets)]
            procs.append(subprocess.Popen(cmd, cwd=str(REPO)))
        if any(p.wait() != 0 for p in procs):
            raise SystemExit("a benchmark worker failed (see its output above)")
        parts = [json.loads((tmp / f"{i}.json").read_text()) for i in range(len(shares))]
    else:
        parts = [run_targets(bench, targets)]
    runs = [r for p in parts for r in p["runs"]]
    baselines = {k: v for p in parts for k, v in p["untouched"].items()}
    step_times: dict[str, list[float]] = {}
    for p in parts:
        for m, v in p["step_times"].items():
            step_times.setdefault(m, []).extend(v)

    table = {}
    for mname in [*s.methods, *(["surgun_localized"] if s.localize else [])]:
        for lr in s.lrs:
            for kind in ("style", "object"):
                rows = [r for r in runs if r["method"] == mname and r["lr"] == lr and r["kind"] == kind]
                if rows:
                    table[f"{mname}|{lr}|{kind}"] = summarise(rows)
    step_cost = {m: statistics.mean(v) for m, v in step_times.items()}
    ref = step_cost.get("surgun")
    report = {
        "settings": dataclasses.asdict(s), "targets": [f"{k}:{n}" for k, n in targets], "gate": gate_metrics,
        "trained_layers": bench.modules, "training_samples_s": max(p["training_samples_s"] for p in parts),
        "untouched": baselines, "runs": runs, "summary": table, "jobs": args.jobs,
        "step_cost_s": step_cost, "step_cost_ratio_to_surgun": {m: (v / ref if ref else None) for m, v in step_cost.items()},
        "grids": [grid_name(k, n) for k, n in first_per_kind(targets) if (k, n) in grid_targets and (args.out / grid_name(k, n)).exists()],
        "wall_s": round(time.perf_counter() - t_start, 1),
    }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "toy_canvas_quick" if s.quick else "toy_canvas"
    (args.out / f"{stem}.json").write_text(json.dumps(report, indent=1))
    (args.out / f"{stem}.md").write_text(markdown(report))
    log.info(markdown(report))
    if s.quick:
        check_quick(report)


def best_by_h(report: dict) -> dict:
    """Per kind and method, the grid point (lr) with the highest mean H over targets and seeds:
    every method gets its own best learning rate from the same grid."""
    out: dict = {}
    for key, d in report["summary"].items():
        m, lr, kind = key.split("|")
        best = out.get((kind, m))
        if "H" in d and (best is None or d["H"]["mean"] > best[1]["H"]["mean"]):
            out[(kind, m)] = (float(lr), d)
    return out


def markdown(report: dict) -> str:
    s = report["settings"]
    runs = report["runs"]
    atk = [f"recovered@{a}" for a in s["attack_steps"]]
    lines = [f"# Toy canvas erasure benchmark{' (quick mode)' if s['quick'] else ''}", "",
             f"Targets: {', '.join(report['targets'])}. Steps {s['steps']}, learning rates {list(s['lrs'])} (the same grid for "
             f"every method), seeds {list(s['seeds'])}, {len(report['trained_layers'])} cross-attention layers trained by every "
             f"method except `surgun_localized` (the Block Localizer's choice per target). Wall time {report['wall_s']} s "
             f"with {report.get('jobs', 1)} worker processes.",
             f"Model gate: object {report['gate']['object_accuracy']:.3f}, style {report['gate']['style_accuracy']:.3f} "
             f"({report['gate']['n_images']} images).", ""]
    if runs:
        r0 = runs[0]
        n_atk = next((r["n_images"] for r in runs if "n_images" in r), 0)
        lines += [f"Per run: UA on {r0['n_target_images']} target-prompt images, IRA and CRA on {r0['n_other_images']} images of "
                  f"prompts without the target" + (f", attack recovery on {n_atk} images (first seed only)" if atk else "") +
                  ". Cells: mean (sd) over targets x seeds; UA: target images not classified as the target; IRA/CRA: retain "
                  "accuracy in/across domain; rel = as a fraction of the untouched model on the same prompts and seeds; "
                  "H: harmonic mean of UA, IRA, CRA; recovered@N: share of images classified as the target after an N-step "
                  "soft-prompt attack (lower is better).", ""]

    def f(d, k):
        return f"{d[k]['mean']:.3f} ({d[k]['sd']:.3f})" if k in d else "-"

    cols = ("UA", "IRA", "CRA", "H", "IRA_rel", "CRA_rel", *atk)
    best = best_by_h(report)
    if best and len(s["lrs"]) > 1:
        lines += ["## Each method at its best learning rate (highest mean H on the grid)", "",
                  "| kind | method | lr | " + " | ".join(c.replace("_", " ") for c in cols) + " |",
                  "|" + " --- |" * (3 + len(cols))]
        for (kind, m), (lr, d) in sorted(best.items(), key=lambda kv: (kv[0][0] != "style", -kv[1][1]["H"]["mean"])):
            lines.append(f"| {kind} | {m} | {lr:.0e} | " + " | ".join(f(d, k) for k in cols) + " |")
        lines += ["", "## Every grid point (UA-versus-retain curves)", ""]
    head = "| method | lr | kind | " + " | ".join(c.replace("_", " ") for c in cols) + " |"
    lines += [head, "|" + " --- |" * (3 + len(cols))]
    for key, d in report["summary"].items():
        m, lr, kind = key.split("|")
        lines.append("| " + " | ".join([m, f"{float(lr):.0e}", kind] + [f(d, k) for k in cols]) + " |")
    lines += ["", "## Untouched model (ceiling for retain, floor for UA)", "",
              "| target | UA | IRA | CRA | " + " | ".join(atk) + (" | " if atk else "") + "distractors chosen |",
              "|" + " --- |" * (5 + len(atk))]
    for t, b in report["untouched"].items():
        lines.append(f"| {t} | {b['UA']:.3f} | {b['IRA']:.3f} | {b['CRA']:.3f} | " + "".join(f"{b.get(a, float('nan')):.3f} | " for a in atk)
                     + f"{', '.join(b['distractors']['names'])} |")
    loc = {t: b["localizer"] for t, b in report["untouched"].items() if "localizer" in b}
    if loc:
        lines += ["", "## Blocks chosen by the Block Localizer", "", "| target | blocks | probe wall time (s) |", "| --- | --- | --- |"]
        for t, info in loc.items():
            lines.append(f"| {t} | {', '.join(b.replace('.transformer_blocks.0', '') for b in info['blocks'])} | {info['wall_s']} |")
    lines += ["", "Time per training step (s) and ratio to SurgUn, same layers: " + ", ".join(
        f"{m} {v:.3f} s" + (f" ({ratio:.2f}x)" if (ratio := report["step_cost_ratio_to_surgun"].get(m)) is not None else "")
        for m, v in report["step_cost_s"].items())]
    for g in report.get("grids", []):
        lines += ["", f"![{g}]({g})"]
    return "\n".join(lines) + "\n"


def check_quick(report: dict) -> None:
    """CI bounds: loose sanity only (the model gate, and SurgUn erases more than doing nothing)."""
    gate = report["gate"]
    assert gate["object_accuracy"] >= 0.8 and gate["style_accuracy"] >= 0.8, f"model gate failed: {gate}"
    for t, base in report["untouched"].items():
        su = [r for r in report["runs"] if r["target"] == t and r["method"] == "surgun"]
        assert su and min(r["UA"] for r in su) > base["UA"], f"SurgUn did not erase {t}: {su} vs untouched {base['UA']}"


if __name__ == "__main__":
    main()
