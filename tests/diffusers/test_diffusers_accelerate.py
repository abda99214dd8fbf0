"""Two CPU processes under ``accelerate launch`` (gloo): a shared-out list, resume, and one concept
trained data-parallel."""

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

from safetensors.torch import load_file

REPO = Path(__file__).resolve().parents[2]
FAST = ["--steps", "3", "--lr", "1e-3", "--sample-size", "16", "--sample-steps", "2", "--samples-per-prompt", "1",
        "--no-progress", "--device", "cpu", "--distractors", "Monet", "Hokusai", "Klimt",
        "--retain", "a photo of a dog", "--retain", "a city street", "--lora-check-images", "0"]


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(*args, timeout=240):
    # --multi_gpu makes accelerate start the processes with torchrun; on a machine without CUDA the
    # package then runs them on CPU with the gloo backend.
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2", "--num_machines", "1",
           "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(_port()),
           "-m", "surgun_diffusers", *args]
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(cmd, cwd=str(REPO), env=env, capture_output=True, text=True, timeout=timeout)


def test_a_list_is_shared_out_between_two_processes_and_resumes(tiny_path, tmp_path):
    out = tmp_path / "batch"
    concepts = tmp_path / "concepts.txt"
    concepts.write_text("# artists to erase\nZorblax\nQuibble Fenn\nMorlan Vey\n")
    r = launch("--model", str(tiny_path("sdxl")), "--concepts", str(concepts), "--out", str(out), *FAST)
    assert r.returncode == 0, r.stderr[-3000:]
    recs = {n: json.loads((out / f"{n}.json").read_text()) for n in ("Zorblax", "Quibble_Fenn", "Morlan_Vey")}
    assert all(rec["status"] == "done" for rec in recs.values())
    # pending concepts are dealt round-robin: process 0 takes the 1st and 3rd, process 1 the 2nd
    assert [recs[n]["process"] for n in ("Zorblax", "Quibble_Fenn", "Morlan_Vey")] == ["0/2", "1/2", "0/2"]
    assert all((out / f"{n}.safetensors").is_file() and (out / f"{n}.lora.safetensors").is_file() for n in recs)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["processes"] == 2 and [c["concept"] for c in summary["concepts"]] == ["Zorblax", "Quibble Fenn", "Morlan Vey"]

    # resume: one concept lost its record (an interrupted run); only that one is redone
    (out / "Quibble_Fenn.json").unlink()
    stamps = {n: (out / f"{n}.safetensors").stat().st_mtime_ns for n in recs}
    r = launch("--model", str(tiny_path("sdxl")), "--concepts", str(concepts), "--out", str(out), *FAST)
    assert r.returncode == 0, r.stderr[-3000:]
    assert (out / "Quibble_Fenn.json").is_file() and json.loads((out / "Quibble_Fenn.json").read_text())["process"] == "0/2"
    assert {n: (out / f"{n}.safetensors").stat().st_mtime_ns for n in ("Zorblax", "Morlan_Vey")} == \
        {n: stamps[n] for n in ("Zorblax", "Morlan_Vey")}
    assert r.stderr.count("already done") == 2


def test_one_concept_trained_data_parallel(tiny_path, tmp_path):
    out = tmp_path / "dp"
    r = launch("--model", str(tiny_path("sdxl")), "--concept", "Zorblax", "--out", str(out), "--data-parallel", *FAST)
    assert r.returncode == 0, r.stderr[-3000:]
    rec = json.loads((out / "Zorblax.json").read_text())
    dp = rec["data_parallel"]
    assert dp["processes"] == 2 and dp["training_seeds"] == [0, 1]
    digests = dp["delta_sha256_per_process"]
    assert len(digests) == 2 and digests[0] == digests[1]  # averaged gradients: both processes hold the same deltas

    # the same concept in one process: same samples, but half the draws per step -> different deltas
    from surgun_diffusers.cli import main

    assert main(["--model", str(tiny_path("sdxl")), "--concept", "Zorblax", "--out", str(tmp_path / "single"), *FAST]) == 0
    a, b = load_file(str(out / "Zorblax.safetensors")), load_file(str(tmp_path / "single" / "Zorblax.safetensors"))
    assert a.keys() == b.keys() and any(not (a[k] == b[k]).all() for k in a)


def test_processes_training_one_concept_together_share_the_guard_and_the_render_stop(tiny_path, tmp_path):
    """Data-parallel: each process draws its own training samples, but all measure the same guard probe and render the
    same checks on the same weights, so they hold and stop the ascent at the same steps and end with the same deltas
    (a process whose guard stopped alone would clear its own optimiser state and part from the others)."""
    out = tmp_path / "dp_probe"
    r = launch("--model", str(tiny_path("sd1")), "--concept", "Zorblax", "--out", str(out), "--data-parallel", *FAST,
               "--steps", "20", "--lr", "1e-2", "--ascent-cap", "50", "--ascent-until-erased")  # a cap that leaves the renders on
    assert r.returncode == 0, r.stderr[-3000:]
    rec = json.loads((out / "Zorblax.json").read_text())
    dp = rec["data_parallel"]
    probes = dp["probes_per_process"]
    assert dp["training_seeds"] == [0, 1] and len(probes) == 2 and probes[0] == probes[1]
    assert [step for step, _ in probes[0]["render_checks"]] == [10, 20]
    assert probes[0]["guard_reference"] > 0 and dp["delta_sha256_per_process"][0] == dp["delta_sha256_per_process"][1]
