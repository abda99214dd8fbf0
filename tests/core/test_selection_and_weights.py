import json

import pytest
import torch

from surgun_pack.surgun_core import ErasedWeights, load_erased_weights, match_names, parse_pattern_text, save_erased_weights, select_trainable
from surgun_pack.surgun_core.errors import SurgUnError
from surgun_pack.surgun_core.weights import delta_key, extract_deltas
from tiny_torch import TinyDenoiser

NAMES = ["blocks.0.attn1.to_q", "blocks.0.attn2.to_k", "blocks.1.attn2.to_k", "blocks.1.attn2.to_k_extra", "xattn2.to_k"]


def test_regex_is_full_match():
    assert match_names(NAMES, r"blocks\.\d+\.attn2\.to_k") == ["blocks.0.attn2.to_k", "blocks.1.attn2.to_k"]
    assert match_names(NAMES, r"attn2\.to_k") == []  # fullmatch, not search


def test_list_is_exact_or_dot_suffix():
    assert match_names(NAMES, ["attn2.to_k"]) == ["blocks.0.attn2.to_k", "blocks.1.attn2.to_k"]
    assert match_names(NAMES, ["xattn2.to_k"]) == ["xattn2.to_k"]
    assert match_names(NAMES, ["to_k_extra", "blocks.0.attn1.to_q"]) == ["blocks.0.attn1.to_q", "blocks.1.attn2.to_k_extra"]


def test_pattern_text_parsing():
    assert parse_pattern_text("re: a\\.b.*") == "a\\.b.*"
    assert parse_pattern_text("attn2, attn1\nfoo ") == ["attn2", "attn1", "foo"]


def test_containers_expand_to_weight_layers_and_norms_are_skipped():
    m = TinyDenoiser(["p"])
    assert select_trainable(m, ["attn2"]) == ["block.attn2.to_k", "block.attn2.to_v"]
    assert select_trainable(m, ["block"]) == ["block.attn2.to_k", "block.attn2.to_v", "block.attn1.to_q"]
    assert "block.norm" not in select_trainable(m, r"block\..*")


def test_no_match_error_lists_existing_names():
    with pytest.raises(SurgUnError) as e:
        select_trainable(TinyDenoiser(["p"]), ["attn9"])
    assert "block.attn2" in str(e.value) and "attn9" in str(e.value)
    with pytest.raises(SurgUnError, match="not a valid regular expression"):
        select_trainable(TinyDenoiser(["p"]), "attn2[")


def test_a_catastrophic_regex_is_refused_in_seconds_naming_its_input():
    import time

    names = [f"output_blocks.{i}.1.transformer_blocks.0.attn2.to_out.0" for i in range(50)]
    bomb = r"(.*)(.*)(.*)(.*)(.*)(.*)(.*)\7\6\5\4\3\2\1\1"  # hours of backtracking per name in re
    t = time.monotonic()
    with pytest.raises(SurgUnError, match="block_filter .* takes too long to match"):
        match_names(names, bomb, "block_filter")
    assert time.monotonic() - t < 20


def test_extract_deltas():
    a = {"m.x": torch.ones(2, 2)}
    b = {"m.x": torch.full((2, 2), 1.5)}
    d = extract_deltas(a, b)
    assert list(d) == ["diffusion_model.m.x.diff"]
    assert torch.equal(d["diffusion_model.m.x.diff"], torch.full((2, 2), 0.5))
    with pytest.raises(SurgUnError, match="shape"):
        extract_deltas({"m.x": torch.ones(3)}, b)


def test_save_load_round_trip(tmp_path):
    deltas = {delta_key("a.attn2.to_k"): torch.randn(4, 3), delta_key("b.attn2.to_v"): torch.randn(2, 2).half()}
    meta = {"family": "sd1", "target": "x", "distractors": ["a", "b"], "steps": 3}
    path = save_erased_weights(str(tmp_path / "sub" / "e.safetensors"), ErasedWeights(deltas, meta))
    back = load_erased_weights(path)
    assert back.metadata == meta
    assert set(back.deltas) == set(deltas)
    for k in deltas:
        assert torch.equal(back.deltas[k], deltas[k]) and back.deltas[k].dtype == deltas[k].dtype
    assert back.modules == ["a.attn2.to_k", "b.attn2.to_v"] and back.family == "sd1"
    assert list(tmp_path.joinpath("sub").iterdir()) == [tmp_path / "sub" / "e.safetensors"]


def test_foreign_and_corrupt_files_are_refused(tmp_path):
    from safetensors.torch import save_file

    lora = tmp_path / "lora.safetensors"
    save_file({"lora_unet_x.lora_up.weight": torch.zeros(2, 2)}, str(lora))
    with pytest.raises(SurgUnError, match="not a SurgUn erased-weights file"):
        load_erased_weights(str(lora))
    junk = tmp_path / "junk.safetensors"
    junk.write_bytes(b"\x00garbage" * 10)
    with pytest.raises(SurgUnError, match="could not read"):
        load_erased_weights(str(junk))
    with pytest.raises(SurgUnError, match="not found"):
        load_erased_weights(str(tmp_path / "missing.safetensors"))
    odd = tmp_path / "odd.safetensors"
    save_file({"weird": torch.zeros(1)}, str(odd), metadata={"format": "surgun.erased_weights/1", "surgun": json.dumps({})})
    with pytest.raises(SurgUnError, match="unexpected tensors"):
        load_erased_weights(str(odd))


def test_failed_save_leaves_no_file(tmp_path, monkeypatch):
    import safetensors.torch as st

    def boom(*a, **k):
        open(a[1], "wb").write(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(st, "save_file", boom)
    with pytest.raises(OSError):
        save_erased_weights(str(tmp_path / "e.safetensors"), ErasedWeights({delta_key("a"): torch.zeros(1)}, {}))
    assert list(tmp_path.iterdir()) == []
