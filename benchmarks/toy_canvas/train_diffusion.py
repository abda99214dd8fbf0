"""Train the toy canvas text-to-image model (UNet + tiny CLIP, jointly) on CPU.

    python -m benchmarks.toy_canvas.train_diffusion --steps 10000 --eval-every 500 \
        --t-power 2 --t-power-start-step 1500 --workdir /tmp/toy_canvas_train \
        --out benchmarks/toy_canvas/weights/toy_canvas.safetensors

(the command that produced the shipped weights; ~2.3 h on one shared CPU thread)

Resumable: a checkpoint (model, EMA, optimiser, data/noise RNG states) is
written to ``--workdir/ckpt.pt`` every ``--ckpt-every`` steps, on SIGTERM/SIGINT
and at the end; re-running the same command continues from it (``--fresh``
ignores it).
``--time-limit-min`` stops cleanly (checkpoint written) after that long, so a
long run can be done in several sittings.

At the end the EMA weights are written to ``--out`` (fp16 safetensors, SD1
checkpoint layout, configs in the metadata), then loaded back with
``model.load_toy_canvas`` and run through the quality gate; the manifest
(``--out`` with ``.json``) records sha256, the command, wall time and metrics.

Objective: v-prediction on ComfyUI's SD1 discrete schedule rescaled to zero
terminal SNR; timesteps uniform for the first 1500 steps then density ~ t
(``--t-power 2``); 10% empty prompts (for CFG), some object-only / style-only
prompts; a small auxiliary loss (``TextAuxHeads``) that makes the text
encoder's end/padding tokens carry the object and style words.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import math
import os
import signal
import sys
import time
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F

log = logging.getLogger("toy_canvas.train")


def _patch_clip_layer_for_autograd() -> None:
    """ComfyUI's CLIPLayer.forward adds its residuals in place (``x += ...``),
    which autograd rejects. For training only, use the identical out-of-place
    form (same math, same outputs)."""
    import comfy.clip_model

    def forward(self, x, mask=None, optimized_attention=None):
        x = x + self.self_attn(self.layer_norm1(x), mask, optimized_attention)
        return x + self.mlp(self.layer_norm2(x))

    comfy.clip_model.CLIPLayer.forward = forward


# prompt mix used in training: (probability, template); {o} object, {s} style
PROMPT_MIX = [
    (0.70, "a {o} in {s} style"),
    (0.07, "a {o}"),
    (0.03, "{o}"),
    (0.07, "{s} style"),
    (0.03, "{s}"),
    (0.10, ""),
]


def training_prompts(objects: torch.Tensor, styles: torch.Tensor, gen: torch.Generator):
    """Prompts from PROMPT_MIX plus the labels they name: (prompts, object
    labels, style labels), label ``len(OBJECTS)`` / ``len(STYLES)`` = not named."""
    from . import world

    probs = torch.tensor([p for p, _ in PROMPT_MIX])
    idx = torch.multinomial(probs, objects.shape[0], replacement=True, generator=gen)
    prompts, lo, ls = [], [], []
    for i, o, s in zip(idx.tolist(), objects.tolist(), styles.tolist()):
        tmpl = PROMPT_MIX[i][1]
        prompts.append(tmpl.format(o=world.OBJECTS[o], s=world.STYLES[s]))
        lo.append(o if "{o}" in tmpl else len(world.OBJECTS))
        ls.append(s if "{s}" in tmpl else len(world.STYLES))
    return prompts, torch.tensor(lo), torch.tensor(ls)


class TextAuxHeads(torch.nn.Module):
    """Training-only linear probes on the text encoder's end/padding tokens.

    SD1-style CLIP conditioning is 77 tokens, ~70 of them end/padding tokens
    that (causal attention) summarise the prompt. Trained jointly with the UNet,
    the tiny CLIP learnt to carry the *style* word into those tokens but not
    the *object* word, and the UNet then ignored objects entirely. Asking these
    tokens to predict both labels (as a contrastively trained CLIP's EOS token
    would) fixes that. Not shipped."""

    def __init__(self, dim: int, n_objects: int, n_styles: int):
        super().__init__()
        self.obj = torch.nn.Linear(dim, n_objects + 1)
        self.sty = torch.nn.Linear(dim, n_styles + 1)

    def loss(self, context: torch.Tensor, pad_mask: torch.Tensor, obj: torch.Tensor, sty: torch.Tensor):
        m = pad_mask.float()
        w = m / m.sum(dim=1, keepdim=True).clamp(min=1)
        lo = self.obj(context)  # (B, T, n+1)
        ls = self.sty(context)
        ce_o = F.cross_entropy(lo.transpose(1, 2), obj[:, None].expand(-1, context.shape[1]), reduction="none")
        ce_s = F.cross_entropy(ls.transpose(1, 2), sty[:, None].expand(-1, context.shape[1]), reduction="none")
        return ((ce_o + ce_s) * w).sum(dim=1).mean()


END_TOKEN = 49407


def lr_at(step: int, total: int, base: float, warmup: int, final_frac: float = 0.1) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    decay_start = int(total * 0.7)
    if step < decay_start:
        return base
    p = min(1.0, (step - decay_start) / max(1, total - decay_start))
    return base * (final_frac + (1 - final_frac) * 0.5 * (1 + math.cos(math.pi * p)))


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=7000)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--clip-lr", type=float, default=None, help="default: --lr")
    p.add_argument("--warmup", type=int, default=200)
    p.add_argument("--ema-decay", type=float, default=0.999)
    p.add_argument("--model-channels", type=int, default=32)
    p.add_argument("--channel-mult", default="1,2,4,4")
    p.add_argument("--num-res-blocks", type=int, default=1)
    p.add_argument("--attention-levels", default=None, help="comma list of levels; default the two lowest resolutions")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--t-power", type=float, default=1.0,
                   help="timesteps t = 999 * u**(1/t_power); >1 favours high noise")
    p.add_argument("--t-power-start-step", type=int, default=0,
                   help="use uniform timesteps before this step and --t-power from it on")
    p.add_argument("--no-zsnr", action="store_true", help="keep the SD1 schedule's non-zero terminal SNR")
    p.add_argument("--train-token-embedding", action="store_true",
                   help="also train CLIP's 49408-row token table (default: frozen at its random init)")
    p.add_argument("--aux-weight", type=float, default=0.1, help="weight of the text aux loss (TextAuxHeads)")
    p.add_argument("--clip-pretrain-steps", type=int, default=300, help="aux-loss-only text encoder warm-up")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--workdir", default="/tmp/toy_canvas_train")
    p.add_argument("--out", default=None, help="final weights (.safetensors); default: <workdir>/toy_canvas.safetensors")
    p.add_argument("--ckpt-every", type=int, default=250)
    p.add_argument("--eval-every", type=int, default=500)
    p.add_argument("--log-every", type=int, default=50)
    p.add_argument("--time-limit-min", type=float, default=None)
    p.add_argument("--fresh", action="store_true")
    p.add_argument("--final-gate-images", type=int, default=None, help="images per prompt for the final gate")
    args = p.parse_args(argv)

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    from . import classifier as cls_mod
    from . import constants, gate, world
    from . import model as M

    M.ensure_comfy()
    _patch_clip_layer_for_autograd()
    logging.getLogger().setLevel(logging.INFO)

    os.makedirs(args.workdir, exist_ok=True)
    ckpt_path = os.path.join(args.workdir, "ckpt.pt")
    out_path = args.out or os.path.join(args.workdir, "toy_canvas.safetensors")
    mult = [int(x) for x in args.channel_mult.split(",")]
    att = tuple(int(x) for x in args.attention_levels.split(",")) if args.attention_levels else None
    unet_config = M.unet_config_for(args.model_channels, mult, args.num_res_blocks, att, args.heads)
    clip_config = dict(M.CLIP_CONFIG)
    sampling_settings = dict(M.SAMPLING_SETTINGS, zsnr=not args.no_zsnr)

    # trainable model + an EMA copy that also serves as the evaluation model
    base = M.build_base_model(unet_config, sampling_settings=sampling_settings)
    clip = M.build_clip(clip_config)
    unet = base.diffusion_model
    text = clip.cond_stage_model.clip_l
    ema_base = M.build_base_model(unet_config, sampling_settings=sampling_settings)
    ema_clip = M.build_clip(clip_config)
    ema_base.diffusion_model.load_state_dict(unet.state_dict())
    ema_clip.cond_stage_model.load_state_dict(clip.cond_stage_model.state_dict())
    ema_patcher = M.wrap_model_patcher(ema_base)
    vae = M.build_vae()

    def text_params(module):
        return [prm for name, prm in module.named_parameters()
                if args.train_token_embedding or "token_embedding" not in name]

    text_train = text_params(text.transformer)
    train_params = list(unet.parameters()) + text_train
    for prm in train_params:
        prm.requires_grad_(True)
    ema_params = list(ema_base.diffusion_model.parameters()) + text_params(ema_clip.cond_stage_model.clip_l.transformer)
    assert len(ema_params) == len(train_params)
    aux = TextAuxHeads(clip_config["hidden_size"], len(world.OBJECTS), len(world.STYLES))
    opt = torch.optim.AdamW([
        {"params": list(unet.parameters()), "lr": args.lr, "base_lr": args.lr},
        {"params": text_train, "lr": args.clip_lr or args.lr, "base_lr": args.clip_lr or args.lr},
        {"params": list(aux.parameters()), "lr": args.lr, "base_lr": args.lr},
    ], lr=args.lr, betas=(0.9, 0.99), weight_decay=0.0)

    n_unet = sum(prm.numel() for prm in unet.parameters())
    n_clip = sum(prm.numel() for prm in text.transformer.parameters())
    n_clip_trained = sum(prm.numel() for prm in text_train)
    log.info("unet params %d, clip params %d (%d trained), sampling %s, unet_config %s", n_unet, n_clip,
             n_clip_trained, json.dumps(sampling_settings), json.dumps(unet_config))

    sigmas = base.model_sampling.sigmas.clone()  # (1000,)
    data_gen = torch.Generator().manual_seed(args.seed * 1000 + 1)
    noise_gen = torch.Generator().manual_seed(args.seed * 1000 + 2)
    step = 0
    elapsed_before = 0.0
    history: List[Dict] = []
    if os.path.exists(ckpt_path) and not args.fresh:
        ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
        if ck["unet_config"] != unet_config or ck.get("sampling_settings") != sampling_settings:
            raise SystemExit(f"checkpoint {ckpt_path} has a different unet_config; use --fresh or another --workdir")
        unet.load_state_dict(ck["unet"])
        text.transformer.load_state_dict(ck["text"])
        aux.load_state_dict(ck["aux"])
        ema_base.diffusion_model.load_state_dict(ck["ema_unet"])
        ema_clip.cond_stage_model.clip_l.transformer.load_state_dict(ck["ema_text"])
        opt.load_state_dict(ck["opt"])
        data_gen.set_state(ck["data_gen"])
        noise_gen.set_state(ck["noise_gen"])
        torch.set_rng_state(ck["torch_rng"])
        step = ck["step"]
        elapsed_before = ck["elapsed"]
        history = ck.get("history", [])
        log.info("resumed from %s at step %d (%.0f s trained)", ckpt_path, step, elapsed_before)

    def save_ckpt() -> None:
        tmp = ckpt_path + ".tmp"
        torch.save({
            "unet_config": unet_config, "sampling_settings": sampling_settings, "step": step, "elapsed": elapsed_before + (time.time() - t_start),
            "unet": unet.state_dict(), "text": text.transformer.state_dict(), "aux": aux.state_dict(),
            "ema_unet": ema_base.diffusion_model.state_dict(),
            "ema_text": ema_clip.cond_stage_model.clip_l.transformer.state_dict(),
            "opt": opt.state_dict(), "data_gen": data_gen.get_state(), "noise_gen": noise_gen.get_state(),
            "torch_rng": torch.get_rng_state(), "history": history, "args": vars(args),
        }, tmp)
        os.replace(tmp, ckpt_path)

    classifier_cache: Dict[str, object] = {}

    def get_classifier():
        # loaded lazily, so training can start while the classifier is still being trained
        if "model" not in classifier_cache and os.path.exists(cls_mod.DEFAULT_WEIGHTS):
            classifier_cache["model"] = cls_mod.load_classifier()
        return classifier_cache.get("model")

    def evaluate(images_per_prompt: int = 1) -> Dict:
        for m in (ema_base, ema_clip.cond_stage_model):
            m.eval()
        metrics = gate.run_gate(ema_patcher, ema_clip, vae, get_classifier(), images_per_prompt=images_per_prompt)
        return metrics

    token_cache: Dict[str, List[int]] = {}

    def tokens_for(prompts: List[str]) -> List[List[int]]:
        out = []
        for s in prompts:
            if s not in token_cache:
                token_cache[s] = [t for t, _w in clip.tokenize(s)["l"][0]]
            out.append(token_cache[s])
        return out

    if step == 0 and args.clip_pretrain_steps > 0:
        tp = time.time()
        popt = torch.optim.AdamW(text_train + list(aux.parameters()), lr=1e-3, weight_decay=0.0)
        for i in range(args.clip_pretrain_steps):
            o, s_ = world.random_labels(64, data_gen)
            prompts, lo, ls = training_prompts(o, s_, data_gen)
            toks = tokens_for(prompts)
            context, _ = text(toks)
            l_aux = aux.loss(context, torch.tensor(toks) == END_TOKEN, lo, ls)
            popt.zero_grad(set_to_none=True)
            l_aux.backward()
            popt.step()
            if i % 100 == 0 or i == args.clip_pretrain_steps - 1:
                log.info("text pre-training %d/%d aux loss %.4f", i, args.clip_pretrain_steps, l_aux.item())
        with torch.no_grad():
            for e, prm in zip(ema_params, train_params):
                e.copy_(prm)
        log.info("text pre-training took %.0f s", time.time() - tp)

    t_start = time.time()
    step0 = step
    loss_acc = 0.0
    aux_acc = 0.0
    loss_n = 0
    unet.train()
    text.train()
    stopped_early = False
    stop_requested = []
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda signum, frame: stop_requested.append(signum))
    while step < args.steps:
        if stop_requested:
            log.info("signal %s: checkpointing at step %d", stop_requested[0], step)
            stopped_early = True
            break
        if args.time_limit_min is not None and (time.time() - t_start) > args.time_limit_min * 60:
            log.info("time limit reached at step %d; checkpointing", step)
            stopped_early = True
            break
        lr_scale = lr_at(step, args.steps, 1.0, args.warmup)
        for g in opt.param_groups:
            g["lr"] = g["base_lr"] * lr_scale

        o, s = world.random_labels(args.batch_size, data_gen)
        x0 = world.render_batch(o, s, generator=data_gen) * 2.0 - 1.0
        prompts, lab_o, lab_s = training_prompts(o, s, data_gen)
        u = torch.rand(args.batch_size, generator=noise_gen)
        t_power = args.t_power if step >= args.t_power_start_step else 1.0
        t = (999 * u.pow(1.0 / t_power)).round().long().clamp(0, 999)
        noise = torch.randn(x0.shape, generator=noise_gen)
        sigma = sigmas[t].view(-1, 1, 1, 1)
        alpha = 1.0 / torch.sqrt(1.0 + sigma ** 2)
        x_in = alpha * x0 + (sigma * alpha) * noise  # ComfyUI: (x0 + sigma n) / sqrt(1 + sigma^2)
        v_target = alpha * noise - (sigma * alpha) * x0

        toks = tokens_for(prompts)
        context, _pooled = text(toks)
        v_pred = unet(x_in, t.float(), context=context)
        loss = F.mse_loss(v_pred, v_target)
        if args.aux_weight > 0:
            l_aux = aux.loss(context, torch.tensor(toks) == END_TOKEN, lab_o, lab_s)
            loss_total = loss + args.aux_weight * l_aux
        else:
            loss_total = loss
        opt.zero_grad(set_to_none=True)
        loss_total.backward()
        torch.nn.utils.clip_grad_norm_(train_params, 1.0)
        opt.step()
        step += 1

        decay = min(args.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            torch._foreach_lerp_(ema_params, [prm.detach() for prm in train_params], 1.0 - decay)

        loss_acc += loss.item()
        aux_acc += l_aux.item() if args.aux_weight > 0 else 0.0
        loss_n += 1
        if step % args.log_every == 0:
            el = elapsed_before + time.time() - t_start
            log.info("step %d/%d loss %.4f aux %.4f lr %.2e (%.0f s, %.2f s/step)", step, args.steps, loss_acc / loss_n,
                     aux_acc / loss_n,
                     opt.param_groups[0]["lr"], el, (time.time() - t_start) / max(1, step - step0))
            loss_acc = 0.0
            aux_acc = 0.0
            loss_n = 0
        if step % args.ckpt_every == 0:
            save_ckpt()
        if args.eval_every > 0 and step % args.eval_every == 0 and get_classifier() is not None:
            te = time.time()
            m = evaluate(1)
            unet.train()
            text.train()
            rec = {"step": step, "elapsed_s": round(elapsed_before + time.time() - t_start, 1),
                   "object_accuracy": m["object_accuracy"], "style_accuracy": m["style_accuracy"],
                   "per_object": m["per_object"]}
            history.append(rec)
            log.info("eval step %d: object %.3f style %.3f (eval %.0f s) per-object %s", step, m["object_accuracy"],
                     m["style_accuracy"], time.time() - te, json.dumps({k: round(v, 2) for k, v in m["per_object"].items()}))
            t_start += time.time() - te  # evaluation time is not training time

    save_ckpt()
    train_wall = elapsed_before + time.time() - t_start
    if stopped_early:
        log.info("stopped at step %d after %.0f s of training; re-run the same command to continue", step, train_wall)
        return 3

    # ship the EMA weights, then verify what was shipped
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    M.save_checkpoint(out_path, ema_base, ema_clip, unet_config, clip_config,
                      extra_metadata={"toy_canvas.steps": str(step)})
    sha = hashlib.sha256(open(out_path, "rb").read()).hexdigest()
    patcher, clip2, vae2 = M.load_toy_canvas(out_path)
    final = None
    if get_classifier() is not None:
        final = gate.run_gate(patcher, clip2, vae2, get_classifier(),
                              images_per_prompt=args.final_gate_images or constants.GATE_IMAGES_PER_PROMPT)
        log.info("final gate: %s", json.dumps(final))
    cmd = "python -m benchmarks.toy_canvas.train_diffusion " + " ".join(argv if argv is not None else sys.argv[1:])
    manifest = {
        "file": os.path.basename(out_path),
        "sha256": sha,
        "bytes": os.path.getsize(out_path),
        "dtype_on_disk": "float16",
        "parameters": {"unet": n_unet, "clip_text_encoder": n_clip, "clip_trained": n_clip_trained,
                       "total": n_unet + n_clip},
        "unet_config": unet_config,
        "clip_config": clip_config,
        "sampling_settings": sampling_settings,
        "model_type": "v_prediction",
        "command": cmd,
        "torch": torch.__version__,
        "threads": args.threads,
        "steps": step,
        "batch_size": args.batch_size,
        "train_wall_s": round(train_wall, 1),
        "prompt_mix": PROMPT_MIX,
        "eval_history": history,
        "final_gate": final,
        "shipped_sampler": constants.SAMPLER_SETTINGS,
    }
    man_path = os.path.splitext(out_path)[0] + ".json"
    with open(man_path, "w") as f:
        json.dump(manifest, f, indent=2)
        f.write("\n")
    print(json.dumps({k: manifest[k] for k in ("file", "sha256", "bytes", "steps", "train_wall_s", "final_gate")}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
