"""benchmarks/fullsize.py's worker on tiny configs of its two kinds (UNet, SANA transformer): the
step it times is the library's step, so a change of the core's API breaks this test and not, hours
later, the benchmark."""

from __future__ import annotations

import argparse
import importlib.util
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]

TINY_UNET = dict(block_out_channels=[32, 64], layers_per_block=1, cross_attention_dim=32, attention_head_dim=8, norm_num_groups=8,
                 down_block_types=["CrossAttnDownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "CrossAttnUpBlock2D"],
                 sample_size=8, in_channels=4, out_channels=4)
TINY_SANA = dict(in_channels=4, out_channels=4, num_attention_heads=2, attention_head_dim=8, num_layers=4, num_cross_attention_heads=2,
                 cross_attention_head_dim=8, cross_attention_dim=16, caption_channels=16, sample_size=8, patch_size=1)


@pytest.fixture(scope="module")
def fullsize():
    spec = importlib.util.spec_from_file_location("surgun_fullsize_bench", REPO / "benchmarks" / "fullsize.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.FAMILIES["tiny_unet"] = {"name": "tiny UNet", "kind": "unet", "config": TINY_UNET, "latent": (4, 8, 8), "ctx": (7, 32),
                                 "prediction": "eps"}
    mod.FAMILIES["tiny_sana"] = {"name": "tiny SANA", "kind": "sana", "config": TINY_SANA, "latent": (4, 8, 8), "ctx": (5, 16),
                                 "prediction": "flow"}
    return mod


@pytest.mark.parametrize("family", ["tiny_unet", "tiny_sana"])
@pytest.mark.parametrize("method, preset, ckpt", [("surgun", "localised", "on"), ("esd_x", "cross_attention", "off")])
def test_worker_times_one_step_of_each_method(fullsize, family, method, preset, ckpt):
    args = argparse.Namespace(family=family, method=method, preset=preset, ckpt=ckpt, device="cpu", dtype="float32", threads=1)
    rec = fullsize.worker(args)
    assert rec["status"] == "ok"
    # SurgUn's step is one batch of 1 target + 2 distractors + 1 retain; ESD-x's one sample
    assert rec["samples_per_step"] == (4 if method == "surgun" else 1)
    assert rec["step_s"] > 0 and rec["peak_mem_gib"] > 0
    assert rec["trained_layers"] > 0 and (len(rec["localised_blocks"]) == 4) == (preset == "localised")


@pytest.mark.parametrize("family", ["tiny_unet", "tiny_sana"])
def test_all_attention_times_a_step_on_every_attention_projection(fullsize, family):
    """The all_attention preset trains the self- and the cross-attention's projections: twice the cross-attention's
    layers, each attn1 one beside its attn2 one."""
    import torch

    fam = fullsize.FAMILIES[family]
    net = fullsize.build(fam, torch.float32)
    cross, _ = fullsize.trained_layers(net, fam["kind"], "cross_attention")
    every, _ = fullsize.trained_layers(net, fam["kind"], "all_attention")
    assert sorted(every) == sorted(cross + [n.replace(".attn2.", ".attn1.") for n in cross])
    args = argparse.Namespace(family=family, method="surgun", preset="all_attention", ckpt="on", device="cpu", dtype="float32", threads=1)
    rec = fullsize.worker(args)
    assert rec["status"] == "ok" and rec["trained_layers"] == len(every)
