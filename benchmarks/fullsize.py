"""What one training step costs at full model size: SurgUn vs ESD-x, per family, preset and
gradient-checkpointing setting. Time and peak memory, on this CPU (or a GPU with --device cuda).

Models are the full architectures with random weights, their configs written from the published
model cards' numbers (no download): SD1.5's UNet at 512 px (64x64 latents), SDXL's UNet at
1024 px (128x128), SANA-1.5 1.6B and 4.8B transformers at 1024 px (32x32 DC-AE latents). The text
encoders are not run: conditioning tensors of the real shapes are random (prompt encoding is done
once per prompt before training and is not part of a step).

One step is exactly what ``surgun_diffusers`` runs, through ``surgun_core.train.train_competition``:

* **SurgUn**: one batched forward/backward of the native loss over 1 target sample, 2 distractor
  samples (under the target prompt) and 1 retain sample (the defaults: ``target_per_step=1``,
  ``distractors_per_step=2``, ``retain_per_step=1``), then Adam;
* **ESD-x**: for 1 sample under the concept prompt, two frozen forwards (concept, empty prompt)
  without gradients, one forward/backward of the trained model, then Adam;

on the same trained layers: ``cross_attention`` (every attn2 projection), ``localised`` (the
four projections of 4 cross-attention blocks, evenly spaced over the network as the localiser's
``max_blocks`` thinning spaces them; which ones is recorded) or ``all_attention`` (every attn1 and
attn2 projection: the blocks preset of that name). The setup (model, the guard's
reference loss on a one-sample probe) is not timed; the timer runs from the step's first forward to the end of its
optimiser step; on CPU the step time is the process's CPU time (one compute thread), which other
jobs sharing the machine's cores inflate far less than the wall time but not to nothing (ESD-x's SD1.5
step read 84 CPU s beside two busy processes and 58 s alone, stop 43), with the wall time kept beside it. Peak memory is the process's resident set sampled every 20 ms during the step
(CPU) or ``torch.cuda.max_memory_allocated`` (GPU).

Each configuration runs in its own process (so peaks are its own) under a memory limit
(``--mem-limit-gb``: on CPU the process ends once its resident set passes it; configurations whose
weights plus trained deltas, gradients and Adam state alone exceed it are not started); a
configuration that does not fit is recorded as such. Results stream to ``benchmarks/results/fullsize.jsonl`` (one line per
configuration; a rerun skips the ones there) and are summarised in ``fullsize.{json,md}``.

    python benchmarks/fullsize.py --all                  # everything not yet measured (hours on 1 CPU thread)
    python benchmarks/fullsize.py --all --only sd15      # one family
    python benchmarks/fullsize.py --remake-md            # rebuild the summary from the .jsonl
    benchmarks/fullsize_gpu.sh                           # the same on a GPU (results/fullsize_gpu.*)
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("SurgUn")
RESULTS = REPO / "benchmarks" / "results"

SD15_UNET = dict(  # runwayml/stable-diffusion-v1-5 unet/config.json
    act_fn="silu", attention_head_dim=8, block_out_channels=[320, 640, 1280, 1280], center_input_sample=False,
    cross_attention_dim=768, down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"], downsample_padding=1,
    flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2, mid_block_scale_factor=1, norm_eps=1e-5,
    norm_num_groups=32, out_channels=4, sample_size=64, up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3,
)
SDXL_UNET = dict(  # stabilityai/stable-diffusion-xl-base-1.0 unet/config.json
    act_fn="silu", addition_embed_type="text_time", addition_time_embed_dim=256, attention_head_dim=[5, 10, 20],
    block_out_channels=[320, 640, 1280], center_input_sample=False, cross_attention_dim=2048,
    down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"], downsample_padding=1,
    flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2, mid_block_scale_factor=1, norm_eps=1e-5,
    norm_num_groups=32, out_channels=4, projection_class_embeddings_input_dim=2816, sample_size=128,
    transformer_layers_per_block=[1, 2, 10], up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
    use_linear_projection=True,
)
SANA15_16B = dict(  # Efficient-Large-Model/SANA1.5_1.6B_1024px_diffusers transformer/config.json
    attention_bias=False, attention_head_dim=32, caption_channels=2304, cross_attention_dim=2240,
    cross_attention_head_dim=112, dropout=0.0, in_channels=32, mlp_ratio=2.5, norm_elementwise_affine=False,
    norm_eps=1e-6, num_attention_heads=70, num_cross_attention_heads=20, num_layers=20, out_channels=32, patch_size=1,
    sample_size=32, qk_norm="rms_norm_across_heads",
)
SANA15_48B = dict(SANA15_16B, num_layers=60)  # SANA1.5 4.8B: the 1.6B model grown to 60 blocks of the same width

FAMILIES = {
    "sd15": {"name": "SD1.5 UNet (860M)", "kind": "unet", "config": SD15_UNET, "latent": (4, 64, 64), "ctx": (77, 768), "prediction": "eps"},
    "sdxl": {"name": "SDXL UNet (2.6B)", "kind": "unet", "config": SDXL_UNET, "latent": (4, 128, 128), "ctx": (77, 2048), "prediction": "eps"},
    "sana16": {"name": "SANA-1.5 1.6B", "kind": "sana", "config": SANA15_16B, "latent": (32, 32, 32), "ctx": (300, 2304), "prediction": "flow"},
    "sana48": {"name": "SANA-1.5 4.8B", "kind": "sana", "config": SANA15_48B, "latent": (32, 32, 32), "ctx": (300, 2304), "prediction": "flow"},
}
METHODS = ("surgun", "esd_x")
PRESETS = ("localised", "cross_attention", "all_attention")
CKPT = (True, False)


def build(fam: dict, dtype):
    """The network with its real config, random weights (filled fast from the meta device)."""
    import torch
    from accelerate import init_empty_weights
    from diffusers import SanaTransformer2DModel, UNet2DConditionModel

    cls = UNet2DConditionModel if fam["kind"] == "unet" else SanaTransformer2DModel
    with init_empty_weights():
        net = cls(**fam["config"])
    net.to_empty(device="cpu")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for name, p in net.named_parameters():
            if p.ndim == 1 and ("norm" in name or name.endswith("scale_shift_table")):
                p.fill_(1.0 if name.endswith(".weight") else 0.0)
            else:
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
        for _, b in net.named_buffers():
            b.zero_()
    return (net if dtype == torch.float32 else net.to(dtype)).eval()


def trained_layers(net, kind: str, preset: str) -> tuple[list[str], list[str]]:
    from surgun_core.selection import select_trainable

    from surgun_diffusers.families import SANA_PRESETS, SANA_UNITS, UNET_PRESETS, UNET_UNITS

    presets, units = (UNET_PRESETS, UNET_UNITS) if kind == "unet" else (SANA_PRESETS, SANA_UNITS)
    if preset in ("cross_attention", "all_attention"):
        return select_trainable(net, presets[preset]), []
    import re

    rx = re.compile(units["cross_attention"])
    cands = [n for n, _ in net.named_modules() if rx.fullmatch(n)]
    step = len(cands) / 4
    chosen = [cands[int(i * step)] for i in range(4)]
    return select_trainable(net, chosen), chosen


class PeakRSS(threading.Thread):
    def __init__(self):
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process()
        self.peak = 0
        self.running = True

    def run(self):
        while self.running:
            self.peak = max(self.peak, self.proc.memory_info().rss)
            time.sleep(0.02)

    def stop(self) -> int:
        self.running = False
        self.join()
        return max(self.peak, self.proc.memory_info().rss)


class ResidentLimit(threading.Thread):
    """Ends the process (exit code 137, as the kernel's OOM killer would) once its resident set
    passes the limit: the machine is shared, and a configuration that needs more does not fit.
    Resident memory, not address space: allocators reserve far more address space than they use."""

    def __init__(self, limit_gib: float):
        super().__init__(daemon=True)
        import psutil

        self.proc = psutil.Process()
        self.limit = int(limit_gib * 1024 ** 3)

    def run(self):
        while True:
            rss = self.proc.memory_info().rss
            if rss > self.limit:
                sys.stderr.write(f"MemoryError: can't allocate memory: resident set {rss / 1024 ** 3:.2f} GiB passed the limit\n")
                sys.stderr.flush()
                os._exit(137)
            time.sleep(0.01)


def worker(args) -> dict:
    import torch

    from surgun_diffusers.methods import ESD_ROLE, METHODS as CORE_METHODS
    from surgun_core.objective import CompetitionWeights
    from surgun_core.train import ConceptData, TrainConfig, train_competition
    from surgun_diffusers.adapter.model import DeltaModel
    from surgun_diffusers.objective import NoiseSchedule, denoising_loss, esd_loss

    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    dev = torch.device(args.device)
    dtype = getattr(torch, args.dtype)
    fam = FAMILIES[args.family]
    rec = {"family": args.family, "model": fam["name"], "method": args.method, "preset": args.preset,
           "gradient_checkpointing": args.ckpt == "on", "device": args.device, "dtype": args.dtype, "threads": args.threads}
    t0 = time.perf_counter()
    net = build(fam, dtype).to(dev)
    rec["params_m"] = round(sum(p.numel() for p in net.parameters()) / 1e6, 1)
    rec["build_s"] = round(time.perf_counter() - t0, 1)
    if args.ckpt == "on":
        net.enable_gradient_checkpointing()
    modules, blocks = trained_layers(net, fam["kind"], args.preset)
    rec["trained_layers"] = len(modules)
    rec["localised_blocks"] = blocks
    rec["trained_params_m"] = round(sum(net.get_submodule(m).weight.numel() for m in modules) / 1e6, 2)

    g = torch.Generator().manual_seed(1)
    L, D = fam["ctx"]
    prompts = ["target", "d1", "d2", "retain", ""]
    cond = {p: torch.randn(1, L, D, generator=g).to(dev, dtype) * (0 if p == "" else 1) for p in prompts}
    pooled = {p: torch.randn(1, 1280, generator=g).to(dev, dtype) for p in prompts}
    lat = lambda: torch.randn(1, *fam["latent"], generator=g)  # noqa: E731
    H = fam["latent"][1] * (8 if fam["kind"] == "unet" else 32)

    def denoise(xt, t, ps):
        c = torch.cat([cond[p] for p in ps])
        x = xt.to(dev, dtype)
        if fam["kind"] == "sana":
            mask = torch.ones(c.shape[:2], device=dev, dtype=torch.long)
            return net(x, encoder_hidden_states=c, encoder_attention_mask=mask, timestep=t.to(dev, dtype), return_dict=False)[0]
        added = None
        if args.family == "sdxl":
            ids = torch.tensor([[H, H, 0, 0, H, H]], device=dev, dtype=dtype).repeat(len(ps), 1)
            added = {"text_embeds": torch.cat([pooled[p] for p in ps]), "time_ids": ids}
        return net(x, t.to(dev), encoder_hidden_states=c, added_cond_kwargs=added).sample

    if fam["prediction"] == "flow":
        from diffusers import FlowMatchEulerDiscreteScheduler

        s = FlowMatchEulerDiscreteScheduler(shift=3.0)
        schedule = NoiseSchedule("flow", 1000, flow_sigmas=s.sigmas.float(), flow_timesteps=s.timesteps.float())
    else:
        from diffusers import DDPMScheduler

        s = DDPMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
        schedule = NoiseSchedule(fam["prediction"], 1000, alphas_cumprod=s.alphas_cumprod.float())

    target = lat()
    if args.method == "surgun":
        data = ConceptData("target", target, {"d1": lat(), "d2": lat()}, {"retain": lat()})
        config = TrainConfig(steps=1, learning_rate=1e-5, guard_samples=1, guard_draws=1)
    else:
        data = ConceptData("target", target, {ESD_ROLE: target}, {})
        m = CORE_METHODS["esd_x"]
        config = TrainConfig(steps=1, learning_rate=1e-5, weights=CompetitionWeights(*[getattr(m.weights, k) for k in ("ascent", "distract", "retain")]),
                             ascent_cap=m.ascent_cap, guard_samples=1, guard_draws=1)
    marks: dict = {}
    monitor = PeakRSS() if dev.type == "cpu" else None

    with torch.inference_mode(False), DeltaModel(net, names=modules) as dm:
        def loss_fn(x0, ps, gen, percents=None):
            if torch.is_grad_enabled() and "start" not in marks:
                import psutil

                marks["rss_before"] = psutil.Process().memory_info().rss
                if dev.type == "cuda":
                    torch.cuda.synchronize()
                    torch.cuda.reset_peak_memory_stats()
                    marks["cuda_before"] = torch.cuda.memory_allocated()
                elif monitor is not None:
                    monitor.start()
                marks["start"] = time.perf_counter()
                marks["cpu_start"] = time.process_time()
                marks["batch"] = x0.shape[0]
            if args.method == "esd_x":
                return esd_loss(schedule, denoise, dm.disabled, x0.to(dev), ps, gen)
            return denoising_loss(schedule, denoise, x0.to(dev), ps, gen, percents=percents)

        def on_step(step, total, metrics):
            if dev.type == "cuda":
                torch.cuda.synchronize()
            marks["end"] = time.perf_counter()
            marks["cpu_end"] = time.process_time()
            marks["metrics"] = metrics

        # the guard's reference pass is setup (once per run, before the timed step, without gradients);
        # its probe is cut to one sample at one noise level so that the setup stays short at full size
        t0 = time.perf_counter()
        train_competition(list(dm.deltas.values()), data, loss_fn, config, on_step)
        setup_s = marks["start"] - t0
    rec["step_wall_s"] = round(marks["end"] - marks["start"], 2)
    # CPU: the process's CPU time (one compute thread), which the other jobs sharing the cores do not
    # inflate; GPU: wall time (synchronised)
    rec["step_s"] = round(marks["cpu_end"] - marks["cpu_start"], 2) if dev.type == "cpu" else rec["step_wall_s"]
    rec["reference_pass_s"] = round(setup_s, 2)
    rec["samples_per_step"] = marks["batch"]
    rec["loss"] = marks["metrics"]["loss"]
    gib = 1024 ** 3
    if dev.type == "cuda":
        rec["peak_mem_gib"] = round(torch.cuda.max_memory_allocated() / gib, 2)
        rec["mem_before_step_gib"] = round(marks["cuda_before"] / gib, 2)
        rec["gpu"] = torch.cuda.get_device_name()
    else:
        rec["peak_mem_gib"] = round(monitor.stop() / gib, 2)
        rec["mem_before_step_gib"] = round(marks["rss_before"] / gib, 2)
    rec["status"] = "ok"
    return rec


def estimate_gib(family: str, preset: str, dtype: str) -> dict:
    """Memory a step needs before any activation: the weights, and the trained deltas with their
    gradients and Adam's two moments (4 fp32 copies). From a meta-device model: nothing allocated."""
    from accelerate import init_empty_weights
    from diffusers import SanaTransformer2DModel, UNet2DConditionModel

    fam = FAMILIES[family]
    with init_empty_weights():
        net = (UNet2DConditionModel if fam["kind"] == "unet" else SanaTransformer2DModel)(**fam["config"])
    total = sum(p.numel() for p in net.parameters())
    trained = sum(net.get_submodule(m).weight.numel() for m in trained_layers(net, fam["kind"], preset)[0])
    gib = 1024 ** 3
    width = 4 if dtype == "float32" else 2
    return {"weights_gib": round(total * width / gib, 2), "trained_params_m": round(trained / 1e6, 2),
            "deltas_grads_adam_gib": round(trained * 16 / gib, 2)}


def key(r: dict) -> tuple:
    return (r["family"], r["method"], r["preset"], bool(r["gradient_checkpointing"]), r.get("device", "cpu"), r.get("dtype", "float32"))


def variants(only, dtype, device) -> list[tuple[str, str]]:
    """(family, weights dtype) to measure. On this CPU (24 GB shared): fp32, plus SDXL with bf16 weights
    (fp32 weights + the cross-attention preset's fp32 deltas, gradients and Adam state exceed the limit)
    and the 4.8B model in bf16 only (its fp32 weights alone are 19 GB)."""
    fams = only or list(FAMILIES)
    out = []
    for f in fams:
        if device == "cpu" and dtype == "float32":
            out += [(f, "bfloat16")] if f == "sana48" else [(f, "float32")] + ([(f, "bfloat16")] if f == "sdxl" else [])
        else:
            out.append((f, dtype))
    return out


def configs(only, dtype, device):
    """Most informative first: checkpointing on (the default), the cross-attention preset (the
    default), every family; the 4.8B model last."""
    vs = variants(only, dtype, device)
    small, big = [v for v in vs if v[0] != "sana48"], [v for v in vs if v[0] == "sana48"]
    for group in (small, big):
        for ckpt in CKPT:
            for preset in ("cross_attention", "localised", "all_attention"):
                for f, dt in group:
                    for method in METHODS:
                        yield f, method, preset, ckpt, dt


def run_all(args) -> None:
    jsonl = Path(args.results).with_suffix(".jsonl")
    jsonl.parent.mkdir(parents=True, exist_ok=True)
    # measured, or known not to fit; a configuration that failed otherwise (e.g. was interrupted) is run again
    done = {key(r) for r in (json.loads(x) for x in (jsonl.read_text().splitlines() if jsonl.is_file() else []) if x.strip())
            if r.get("status") == "ok" or str(r.get("status", "")).startswith("does not fit")}
    for f, method, preset, ckpt, dtype in configs(args.only, args.dtype, args.device):
        k = (f, method, preset, ckpt, args.device, dtype)
        if k in done:
            continue
        if args.device == "cpu":
            est = estimate_gib(f, preset, dtype)
            need = est["weights_gib"] + est["deltas_grads_adam_gib"]
            if need > args.mem_limit_gb:
                rec = {"family": f, "model": FAMILIES[f]["name"], "method": method, "preset": preset, "gradient_checkpointing": ckpt,
                       "device": args.device, "dtype": dtype, "threads": args.threads, **est,
                       "status": f"does not fit in {args.mem_limit_gb:g} GiB (needs {need:.1f} GiB before activations)", "wall_s": 0.0}
                with jsonl.open("a") as fh:
                    fh.write(json.dumps(rec) + "\n")
                log.info("[SurgUn] %s %s %s ckpt=%s: %s", f, method, preset, "on" if ckpt else "off", rec["status"])
                write_summary(jsonl)
                continue
        cmd = [sys.executable, __file__, "--worker", "--family", f, "--method", method, "--preset", preset,
               "--ckpt", "on" if ckpt else "off", "--device", args.device, "--dtype", dtype, "--threads", str(args.threads),
               "--mem-limit-gb", str(args.mem_limit_gb)]
        if args.device == "cpu" and args.nice:
            cmd = ["nice", "-n", "19", *cmd]
        log.info("[SurgUn] %s (%s) %s %s ckpt=%s ...", f, dtype, method, preset, "on" if ckpt else "off")
        t = time.perf_counter()
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONPATH": str(REPO)}
        p = subprocess.run(cmd, capture_output=True, text=True, env=env)
        line = next((x for x in reversed(p.stdout.splitlines()) if x.startswith("{")), None)
        if p.returncode == 0 and line:
            rec = json.loads(line)
        else:
            tail = (p.stderr or "")[-3000:]
            oom = p.returncode in (-9, 137) or "can't allocate memory" in tail or "MemoryError" in tail or "out of memory" in tail.lower()
            rec = {"family": f, "model": FAMILIES[f]["name"], "method": method, "preset": preset, "gradient_checkpointing": ckpt,
                   "device": args.device, "dtype": dtype, "threads": args.threads,
                   "status": f"does not fit in {args.mem_limit_gb:g} GiB" if oom else f"failed (rc {p.returncode})",
                   "error": next((x for x in reversed(tail.splitlines()) if "Error" in x or "error" in x), tail.strip()[-300:])}
        rec["wall_s"] = round(time.perf_counter() - t, 1)
        with jsonl.open("a") as fh:
            fh.write(json.dumps(rec) + "\n")
        log.info("[SurgUn]   -> %s step %s s, peak %s GiB", rec["status"], rec.get("step_s"), rec.get("peak_mem_gib"))
        write_summary(jsonl)
    write_summary(jsonl)


def write_summary(jsonl: Path) -> None:
    recs = [json.loads(x) for x in jsonl.read_text().splitlines() if x.strip()]
    latest = {}
    for r in recs:
        latest[key(r)] = r
    recs = list(latest.values())
    rows = []
    for r in recs:
        if r["method"] != "surgun":
            continue
        esd = latest.get((r["family"], "esd_x", r["preset"], r["gradient_checkpointing"], r.get("device", "cpu"), r.get("dtype", "float32")))
        ratio = (round(r["step_s"] / esd["step_s"], 2) if (esd and r.get("status") == "ok" and esd.get("status") == "ok") else None)
        rows.append((r, esd, ratio))
    jsonl.with_suffix(".json").write_text(json.dumps({"configs": recs, "surgun_over_esd_x": [
        {"family": r["family"], "preset": r["preset"], "gradient_checkpointing": r["gradient_checkpointing"], "dtype": r.get("dtype"),
         "device": r.get("device"), "ratio_step_time": ratio} for r, _, ratio in rows]}, indent=1))
    order = {f: i for i, f in enumerate(FAMILIES)}
    rows.sort(key=lambda x: (order.get(x[0]["family"], 9), x[0]["preset"] != "localised", not x[0]["gradient_checkpointing"]))

    def cell(r, field, fmt="{:.1f}"):
        if r is None:
            return "-"
        if r.get("status") != "ok":
            return r.get("status", "?")
        return fmt.format(r[field])

    dev = recs[0].get("device", "cpu") if recs else "cpu"
    lines = [
        f"# Full-size step cost: SurgUn vs ESD-x ({'this CPU, ' + str(recs[0].get('threads', 1)) + ' thread, CPU seconds' if dev == 'cpu' else recs[0].get('gpu', dev) if recs else dev})",
        "",
        "Generated by `benchmarks/fullsize.py` from `" + jsonl.name + "` (one process per configuration; random weights, "
        "real architectures; see the script's docstring for what a step is). SurgUn's step is a batch of 4 samples "
        "(1 target, 2 distractors, 1 retain), ESD-x's 1 sample with two extra frozen forwards.",
        "",
        "| model | dtype | preset (trained layers, M params) | ckpt | SurgUn step s | SurgUn peak GiB | ESD-x step s | ESD-x peak GiB | SurgUn / ESD-x time |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    def size(r, esd):
        """Trained layers and parameters, from whichever method's record has them (a run that did not fit has none)."""
        layers = r.get("trained_layers") or (esd or {}).get("trained_layers")
        params = r.get("trained_params_m") or (esd or {}).get("trained_params_m")
        shown = ", ".join(str(v) for v in (layers, params) if v is not None)
        return f" ({shown})" if shown else ""

    for r, esd, ratio in rows:
        lines.append(
            f"| {r['model']} | {r.get('dtype')} | {r['preset']}{size(r, esd)} | "
            f"{'on' if r['gradient_checkpointing'] else 'off'} | {cell(r, 'step_s')} | {cell(r, 'peak_mem_gib', '{:.2f}')} | "
            f"{cell(esd, 'step_s')} | {cell(esd, 'peak_mem_gib', '{:.2f}')} | {ratio if ratio is not None else '-'} |")
    loc = sorted({(r["model"], tuple(r.get("localised_blocks") or ())) for r in recs if r.get("localised_blocks")})
    if loc:
        lines += ["", "Localised blocks (4 cross-attention blocks, evenly spaced):", ""]
        lines += [f"* {m}: {', '.join(b)}" for m, b in loc]
    lines += ["", "Peak memory: resident set of the process during the step (CPU; includes the weights) or "
              "`torch.cuda.max_memory_allocated` (GPU). `mem_before_step_gib`, build and reference-pass times are in the .json."]
    jsonl.with_suffix(".md").write_text("\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--all", action="store_true", help="run every configuration not yet in the results")
    ap.add_argument("--only", nargs="+", choices=list(FAMILIES), default=None)
    ap.add_argument("--worker", action="store_true")
    ap.add_argument("--family", choices=list(FAMILIES))
    ap.add_argument("--method", choices=METHODS)
    ap.add_argument("--preset", choices=PRESETS)
    ap.add_argument("--ckpt", choices=["on", "off"])
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--mem-limit-gb", type=float, default=17.0, help="CPU: resident-set limit per configuration (the machine is shared)")
    ap.add_argument("--no-nice", dest="nice", action="store_false")
    ap.add_argument("--results", default=str(RESULTS / "fullsize.jsonl"))
    ap.add_argument("--remake-md", action="store_true")
    args = ap.parse_args()
    if str(REPO) not in sys.path:  # run as a script (the docstring's commands): surgun_core and surgun_diffusers live here
        sys.path.insert(0, str(REPO))
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    if args.worker:
        if args.device == "cpu" and args.mem_limit_gb > 0:
            ResidentLimit(args.mem_limit_gb).start()
        sys.stdout.write(json.dumps(worker(args)) + "\n")  # the one line the parent process reads
        sys.stdout.flush()
        return
    if args.remake_md:
        write_summary(Path(args.results).with_suffix(".jsonl"))
        return
    if args.all:
        run_all(args)
        return
    ap.error("give --all, --remake-md or --worker")


if __name__ == "__main__":
    main()
