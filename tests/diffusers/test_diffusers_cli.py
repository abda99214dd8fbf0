"""The command line, in process: one concept or a list, both files, a summary, resume, clear errors."""

import json
import logging

import pytest
from safetensors import safe_open

from surgun_diffusers.cli import main
from surgun_diffusers.progress import Progress

FAST = ["--steps", "2", "--lr", "1e-3", "--sample-size", "16", "--sample-steps", "2", "--samples-per-prompt", "1",
        "--no-progress", "--device", "cpu"]
RETAIN = ["--retain", "a photo of a dog", "--retain", "a city street at night"]


def run(path, out, *extra):
    return main(["--model", str(path), "--out", str(out), *FAST, *extra])


def test_a_list_of_concepts_writes_both_files_a_record_and_a_summary_then_resumes(tiny_path, tmp_path, caplog):
    out = tmp_path / "out"
    args = ["--concept", "Zorblax", "--concept", "Quibble Fenn", "--target", "a painting of a harbour by {}", "--kind", "artist",
            "--distractors", "Claude Monet", "Hokusai", *RETAIN, "--lora-check-images", "1"]
    with caplog.at_level(logging.INFO, logger="SurgUn"):
        assert run(tiny_path("sdxl"), out, *args) == 0
    for slug in ("Zorblax", "Quibble_Fenn"):
        rec = json.loads((out / f"{slug}.json").read_text())
        assert rec["status"] == "done" and rec["family"] == "sdxl" and rec["comfyui"] is True
        assert rec["distractors"] == ["Claude Monet", "Hokusai"] and rec["steps"] == 2
        assert rec["lora"]["rank_max"] >= rec["lora"]["rank_min"] >= 1 and 0.9 <= rec["lora"]["energy_kept"] <= 1.0
        err = rec["lora"]["image_error"]
        assert err["images"] == 3 and 0 <= err["lora_vs_exact"]["mean_abs"] <= 1 and err["lora_vs_exact"]["psnr_db"] > 0
        with safe_open(str(out / f"{slug}.safetensors"), "pt") as f:
            meta = json.loads(f.metadata()["surgun"])
            assert all(k.startswith("diffusion_model.") and k.endswith(".diff") for k in f.keys())
        assert meta["family"] == "sdxl" and meta["module_names"] == "comfyui" and meta["targets"][0].startswith("a painting of a harbour by ")
        with safe_open(str(out / f"{slug}.lora.safetensors"), "pt") as f:
            assert all(k.startswith("unet.") and (".lora_A." in k or ".lora_B." in k) for k in f.keys())
    summary = json.loads((out / "summary.json").read_text())
    assert [c["status"] for c in summary["concepts"]] == ["done", "done"]
    assert any("Quibble Fenn" in r.message and "done" in r.message for r in caplog.records)

    stamps = {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "summary.json"}
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="SurgUn"):
        assert run(tiny_path("sdxl"), out, *args) == 0  # resume: nothing redone
    assert {p.name: p.stat().st_mtime_ns for p in out.iterdir() if p.name != "summary.json"} == stamps
    assert sum("already done" in r.message for r in caplog.records) == 2


def test_a_resume_with_other_settings_says_which_and_leaves_the_done_concept_as_it_was(tiny_path, tmp_path, caplog):
    out = tmp_path / "resume"
    args = ["--concept", "Zorblax", "--distractors", "Claude Monet", "Hokusai", *RETAIN, "--no-lora"]
    assert run(tiny_path("sd1"), out, *args) == 0
    stamp = (out / "Zorblax.safetensors").stat().st_mtime_ns
    with caplog.at_level(logging.INFO, logger="SurgUn"):
        assert run(tiny_path("sd1"), out, *args, "--steps", "3", "--ascent-until-tie") == 0
    said = [r.message for r in caplog.records if r.levelno == logging.WARNING]
    assert len(said) == 1 and "'Zorblax' is already done in" in said[0] and "trained with other settings" in said[0]
    assert "--ascent-until-tie: off there, on now; --steps: 2 there, 3 now" in said[0]
    assert "Delete Zorblax.json to redo it with these, or give another --out." in said[0]
    assert (out / "Zorblax.safetensors").stat().st_mtime_ns == stamp
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="SurgUn"):
        assert run(tiny_path("sd1"), out, *args) == 0  # the same settings: skipped without a warning
    assert not [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("already done" in r.message for r in caplog.records)


def test_distractors_come_from_the_kind_pool_through_the_pipelines_text_encoder(tiny_path, tmp_path):
    out = tmp_path / "pool"
    assert run(tiny_path("sdxl"), out, "--concept", "Vincent van Gogh", "--kind", "artist", "--k", "3", *RETAIN, "--no-lora",
               "--cache-dir", str(tmp_path / "cache")) == 0
    rec = json.loads((out / "Vincent_van_Gogh.json").read_text())
    from surgun_core.distractors import aliases_of, load_pool

    pool = set(load_pool("artist").entries)
    assert len(rec["distractors"]) == 3 and set(rec["distractors"]) <= pool
    assert not {d.lower() for d in rec["distractors"]} & aliases_of("Vincent van Gogh")
    # paired with the kind's template: each distractor prompt is the target prompt with the name swapped
    with safe_open(str(out / "Vincent_van_Gogh.safetensors"), "pt") as f:
        meta = json.loads(f.metadata()["surgun"])
    (target, prompts), = meta["distractor_prompts"].items()
    assert target == "a painting in the style of Vincent van Gogh"
    assert prompts == {d: f"a painting in the style of {d}" for d in rec["distractors"]}
    assert meta["distractor_selection"]["source"] == "artist pool" and meta["distractor_selection"]["pool"]["size"] > 500


def test_localised_run_trains_only_the_chosen_blocks(tiny_path, tmp_path):
    out = tmp_path / "loc"
    assert run(tiny_path("sdxl"), out, "--concept", "Zorblax", "--distractors", "Monet", "Hokusai", *RETAIN, "--no-lora",
               "--localize", "--keep", "2", "--max-blocks", "4", "--probe-steps", "2",
               # random tiny weights: nothing erases above the noise floor, so the plumbing is tested without it
               "--no-noise-floor", "--erase-threshold", "-1", "--min-fraction", "0") == 0
    with safe_open(str(out / "Zorblax.safetensors"), "pt") as f:
        meta = json.loads(f.metadata()["surgun"])
    loc = meta["localization"]
    assert len(loc["blocks"]) == 4 and len(loc["chosen"]) == 2 and loc["embedding"].startswith("pixel fallback")
    assert all(b.endswith(".attn2") for b in loc["chosen"])
    assert sorted({m.rsplit(".", 2)[0] if m.endswith("to_out.0") else m.rsplit(".", 1)[0] for m in meta["blocks"]["modules_diffusers"]}) == sorted(loc["chosen"])


@pytest.mark.parametrize("extra, message", [
    (["--concept", "Zorblax", "--distractors", "Monet"], "no retain prompts were given"),
    (["--concept", "Zorblax", *RETAIN], "no distractors were given and kind is 'custom'"),
    (["--concept", "Zorblax", "--target", "a painting", "--distractors", "Monet", *RETAIN], "has no '{}' slot and does not contain the concept 'Zorblax'"),
    (["--concepts", "/nonexistent/list.txt", *RETAIN], "file not found: '/nonexistent/list.txt'"),
    (["--concept", "Zorblax", "--distractors", "Zorblax", *RETAIN], "also listed among the distractors"),
    (["--concept", "Zorblax", "--distractors", "Monet", "--sample-cfg", "nan", *RETAIN], "sample cfg must be a finite number in [0, 100], got 'nan'"),
    (["--concept", "Zorblax", "--distractors", "Monet", "--ascent-until-tie", "--no-shared-noise", *RETAIN],
     "--ascent-until-tie compares the target's images with its distractors' images from the same noise, so it needs shared "
     "noise; --no-shared-noise turns that off. Drop --no-shared-noise, or drop --ascent-until-tie."),
    (["--concept", "Zorblax", "--distractors", "Monet", "--method", "esd_x", "--adversary-steps", "1", *RETAIN],
     "Use --method surgun, or drop --adversary-steps"),
    (["--concept", "Zorblax", "--distractors", "Monet", "--adversary-steps", "-1", *RETAIN], "adversary_steps must be an integer >= 0, got -1"),
    (["--concept", "Zorblax", "--distractors", "Monet", "--ascent-until-erased", "--no-shared-noise", *RETAIN],
     "Drop --no-shared-noise, or drop --ascent-until-erased."),
    (["--concept", "Zorblax", "--distractors", "Monet", "--sample-size", "20", *RETAIN],
     "--sample-size must be a multiple of 8 (the latent grid), got 20. Try 16, or 0 for the family's native size."),
    (["--concept", "Zorblax", "--distractors", "Monet", "--samples-per-prompt", "0", *RETAIN], "--samples-per-prompt must be at least 1, got 0."),
    (["--concept", "Zorblax", "--distractors", "Monet", "--lr", "0", *RETAIN], "--lr must be a finite number above 0, got 0.0. Try 1e-5."),
    (["--concept", "Zorblax", "--distractors", "Monet", "--ascent-until-erased", "--method", "esd_x", *RETAIN],
     "Use --method surgun, or drop --ascent-until-erased"),
])
def test_bad_inputs_stop_with_a_clear_error(tiny_path, tmp_path, caplog, extra, message):
    with caplog.at_level(logging.INFO, logger="SurgUn"):
        rc = run(tiny_path("sdxl"), tmp_path / "bad", *extra)
    assert rc != 0
    errors = [r.message for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors and message in errors[0] and errors[0].startswith("[SurgUn]")


def test_help_shows_a_default_where_it_is_a_value_and_every_flag_says_what_it_does(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "(default: False)" not in text and "(default: None)" not in text and "(default: [])" not in text
    assert "(0: off, the prompts only) (default: 0)" in text  # --adversary-steps: a zero default is a value
    assert "training steps (one Adam step each) (default: 200)" in text
    from surgun_diffusers.cli import build_parser

    silent = [a.option_strings[-1] for a in build_parser()._actions if not a.help]
    assert not silent, f"flags without help: {silent}"


def test_a_missing_model_says_what_was_received(tmp_path, caplog):
    with caplog.at_level(logging.INFO, logger="SurgUn"):
        assert main(["--model", str(tmp_path / "nope"), "--concept", "x", "--out", str(tmp_path / "o"), *FAST, *RETAIN]) == 2
    assert "was not found" in caplog.records[-1].message and str(tmp_path / "nope") in caplog.records[-1].message
    (tmp_path / "notpipe").mkdir()
    with caplog.at_level(logging.INFO, logger="SurgUn"):
        assert main(["--model", str(tmp_path / "notpipe"), "--concept", "x", "--out", str(tmp_path / "o"), *FAST, *RETAIN]) == 2
    assert "not a diffusers pipeline (no model_index.json)" in caplog.records[-1].message


def test_progress_counts_every_sampling_and_training_step(load):
    from surgun_core.train import TrainConfig
    from surgun_diffusers.erase import EraseRequest, SamplingOptions, erase

    p = Progress(enabled=False)
    erase(load("sdxl"), EraseRequest(concept="Zorblax", distractors=("Monet", "Hokusai"), retain=("a dog",),
                                     train=TrainConfig(steps=3, learning_rate=1e-3),
                                     sampling=SamplingOptions(size=16, steps=2, per_prompt=1)), p)
    assert p.total == 4 * 2 + 3 and p.done == p.total  # 4 prompts x 2 sampler steps + 3 training steps


class Watched(Progress):
    """A silent bar that records (done, total) at every tick."""

    def __init__(self):
        super().__init__(enabled=False)
        self.seen = []

    def tick(self, n=1):
        super().tick(n)
        self.seen.append((self.done, self.total))


@pytest.mark.parametrize("guard_stops", [False, True])
def test_the_progress_bar_knows_the_render_stops_work_before_it_starts_and_ends_full(load, monkeypatch, guard_stops):
    """--ascent-until-erased: the references' and the checks' render steps are on the bar from the start (it never
    moves back), and checks skipped while the guard holds the ascent are counted done at the end."""
    from surgun_core.guard import AscentGuard
    from surgun_core.train import TrainConfig

    if guard_stops:  # the probe reads x3 after its reference: the guard stops the ascent at its first measurement
        real = AscentGuard.measure
        monkeypatch.setattr(AscentGuard, "measure", lambda self: real(self) * (3.0 if hasattr(self, "reference") else 1.0))
    from surgun_diffusers.erase import EraseRequest, SamplingOptions, erase

    p = Watched()
    train = TrainConfig(steps=20, learning_rate=1e-2, shared_noise=True, ascent_until_erased=True)
    result = erase(load("sd1"), EraseRequest(concept="Zorblax", targets=("a painting of a harbour by {}",),
                                             distractors=("Monet", "Hokusai"), retain=("a dog",), train=train,
                                             sampling=SamplingOptions(size=16, steps=5, per_prompt=1)), p).result
    assert [s for s, _ in result.drawn] == ([] if guard_stops else [10, 20]) and bool(result.guard_stops) is guard_stops
    sampled = 4 * 5  # 4 prompts (the line, its 2 distractors' lines, a dog) x 5 sampler steps; then 4 sets x 3 prompts x
    # 2 steps (40 % of 5) of references, 2 checks x 2 steps
    totals = [t for _, t in p.seen]  # from the first tick of sampling on
    assert p.total == sampled + 20 + 4 * 3 * 2 + 2 * 2 and len(set(totals)) == 1 and p.done == p.total


@pytest.mark.parametrize("eligible", [4, 1])
def test_the_progress_bar_plans_the_localisers_work_before_it_starts_and_ends_full(load, monkeypatch, eligible):
    """--localize: the localiser's renders and short update are on the bar from the first tick (it never grows once the
    localiser starts); the retain renders of blocks found not eligible are counted done when eligibility is known."""
    import surgun_core.localize as core_localize
    from surgun_core.train import TrainConfig

    if eligible < 4:  # random tiny weights erase nothing to speak of: keep only the first block eligible
        real = core_localize._eligible
        monkeypatch.setattr(core_localize, "_eligible", lambda *a: (lambda rows, threshold: (rows[:eligible], threshold))(*real(*a)))
    from surgun_diffusers.erase import EraseRequest, LocalizeOptions, SamplingOptions, erase

    p = Watched()
    # a threshold of -1 and no noise floor make every block eligible
    loc = LocalizeOptions(keep=1, max_blocks=4, probe_steps=2, noise_floor=False, erase_threshold=-1)
    result = erase(load("sdxl"), EraseRequest(concept="Zorblax", distractors=("Monet", "Hokusai"), retain=("a dog",),
                                             train=TrainConfig(steps=3, learning_rate=1e-3), localize=loc,
                                             sampling=SamplingOptions(size=16, steps=2, per_prompt=1)), p)
    rows = result.metadata["localization"]["blocks"]
    assert len(rows) == 4 and sum(r["retain"] is not None for r in rows) == eligible
    # 4 prompts x 2 steps sampled, 3 training steps; the localiser: 1 target line rendered at the probe's seeds and
    # at the floor's (2 x 2), 2 update steps, 4 blocks x 1 line x 2 steps, and 1 retain prompt x 2 steps for the
    # reference and each of the 4 blocks, planned whether or not they are eligible
    assert p.total == 4 * 2 + 3 + 2 * 2 + 2 + 4 * 2 + 5 * 2
    assert len({t for _, t in p.seen}) == 1 and p.done == p.total


def test_shared_noise_is_the_default_and_reaches_the_sampling_and_every_training_step(tiny_path, tmp_path, monkeypatch):
    """As in the node: the training images start from shared noises (image k of every prompt from the same
    noise) and each step's distractor rows take the target row's noise and level; --no-shared-noise turns both off."""
    from surgun_diffusers import erase as erase_mod

    real_loss, real_sample = erase_mod.denoising_loss, erase_mod.sample_latents
    rows, starts = [], []

    def loss(*a, **k):
        rows.append(a[5] if len(a) > 5 else k.get("noise_rows"))
        return real_loss(*a, **k)

    def sample(pipe, family, prompts, *a, **k):
        out = real_sample(pipe, family, prompts, *a, **k)
        starts.append(out)
        return out

    monkeypatch.setattr(erase_mod, "denoising_loss", loss)
    monkeypatch.setattr(erase_mod, "sample_latents", sample)
    args = ["--concept", "Zorblax", "--target", "a painting of a harbour by {}", "--kind", "artist",
            "--distractors", "Claude Monet", "Hokusai", *RETAIN, "--samples-per-prompt", "2", "--lora-check-images", "0"]
    for on in (True, False):
        rows.clear(), starts.clear()
        out = tmp_path / f"out{on}"
        assert run(tiny_path("sd1"), out, *args, *([] if on else ["--no-shared-noise"])) == 0
        with safe_open(str(out / "Zorblax.safetensors"), "pt") as f:
            assert json.loads(f.metadata()["surgun"])["hyperparameters"]["shared_noise"] is on
        steps = [r for r in rows if r is not None]
        assert steps == ([[0, 0, 0, 3]] * 2 if on else [])  # target, 2 distractors, 1 retain row per step
        if on:  # same starting noise: two prompts' first images are closer than the two images of one prompt
            monet, hokusai = (starts[0][f"a painting of a harbour by {d}"] for d in ("Claude Monet", "Hokusai"))
            assert float((monet[0] - hokusai[0]).abs().mean()) < 0.5 * float((monet[0] - monet[1]).abs().mean())


def test_ascent_until_tie_reaches_training_and_turns_the_ascent_off_where_the_target_has_lost(tiny_path, tmp_path):
    """--ascent-until-tie reaches the core's training loop: the weights file says so, and its last step reports
    whether that step's ascent ran or was tied (the core's tests check the comparison itself)."""
    out = tmp_path / "tie"
    assert run(tiny_path("sd1"), out, "--concept", "Zorblax", "--target", "a painting of a harbour by {}", "--kind", "artist",
               "--distractors", "Claude Monet", "Hokusai", *RETAIN, "--steps", "6", "--ascent-until-tie",
               "--lora-check-images", "0") == 0
    with safe_open(str(out / "Zorblax.safetensors"), "pt") as f:
        meta = json.loads(f.metadata()["surgun"])
    assert meta["hyperparameters"]["ascent_until_tie"] is True and meta["hyperparameters"]["shared_noise"] is True
    assert meta["final"]["step"] == 6 and meta["final"]["ascent_active"] + meta["final"]["ascent_tied"] == 1


def test_ascent_until_erased_renders_the_target_as_it_trains_and_holds_the_ascent_off_once_none_draws_it(tiny_path, tmp_path,
                                                                                                          monkeypatch):
    """--ascent-until-erased: every 10 steps the target lines are rendered with the deltas as they are (renders that
    still draw the target leave the run exactly as without the flag: the renders take nothing from the training's
    random draws); a check that reads none drawn holds the ascent off from that step, and the weights file records
    the checks (the reading itself: tests/core/test_drawn_probe.py, the sampler: test_diffusers_objective.py)."""
    import torch

    from surgun_diffusers import drawn

    real = drawn.DiffusersDrawnProbe.__call__
    readings, renders = [], []

    def read(self, model):
        prompts = [d.target_prompt for d in self.lines]
        renders.append(self.render(model, prompts, self.seeds[0], dict(zip(prompts, self.noise[0])))[prompts[0]])
        real(self, model)  # the real check runs too, and its reading is replaced by the test's
        return {c: readings[0] for c in self.masks}

    monkeypatch.setattr(drawn.DiffusersDrawnProbe, "__call__", read)
    args = ["--concept", "Zorblax", "--target", "a painting of a harbour by {}", "--kind", "artist", "--distractors",
            "Claude Monet", "Hokusai", *RETAIN, "--steps", "20", "--lr", "1e-2", "--lora-check-images", "0", "--no-lora"]
    files = {}
    for name, extra, reading in (("off", [], None), ("drawn", ["--ascent-until-erased"], 1.0),
                                 ("erased", ["--ascent-until-erased"], 0.0)):
        readings[:] = [reading]
        assert run(tiny_path("sd1"), tmp_path / name, *args, *extra) == 0
        with safe_open(str(tmp_path / name / "Zorblax.safetensors"), "pt") as f:
            files[name] = (json.loads(f.metadata()["surgun"]), {k: f.get_tensor(k) for k in f.keys()})
    off, on, held = files["off"], files["drawn"], files["erased"]
    assert on[0]["hyperparameters"]["ascent_until_erased"] is True and "ascent_until_erased" not in off[0]
    assert on[0]["ascent_until_erased"] == {"checks": [[10, {"Zorblax": 1.0}], [20, {"Zorblax": 1.0}]], "held_off_at": {}}
    assert all(torch.equal(on[1][k], off[1][k]) for k in off[1])
    assert not torch.allclose(renders[0], renders[1], atol=1e-6)  # step 10's render and step 20's: the deltas as they are
    assert held[0]["ascent_until_erased"]["held_off_at"] == {"Zorblax": [10]} and held[0]["final"]["ascent_active"] == 0.0
    record = json.loads((tmp_path / "erased" / "Zorblax.json").read_text())  # the record says it too
    assert record["ascent_until_erased"] == held[0]["ascent_until_erased"]
    assert any(not torch.equal(held[1][k], off[1][k]) for k in off[1])


def test_text_subspace_confines_the_prompt_reading_layers_to_the_measured_directions(tiny_path, tmp_path):
    """--text-subspace: the to_k/to_v deltas together act on no more text directions than the run measured (the
    core's tests check the span itself), and the other chosen layers still train."""
    import torch

    out = tmp_path / "sub"
    assert run(tiny_path("sd1"), out, "--concept", "Zorblax", "--target", "a painting of a harbour by {}", "--kind", "artist",
               "--distractors", "Claude Monet", "Hokusai", *RETAIN, "--steps", "4", "--lr", "1e-3", "--text-subspace",
               "--lora-check-images", "0") == 0
    with safe_open(str(out / "Zorblax.safetensors"), "pt") as f:
        meta = json.loads(f.metadata()["surgun"])
        deltas = {k: f.get_tensor(k).float() for k in f.keys()}
    sub = meta["text_subspace"]
    assert sorted(sub["confined"] + sub["free"]) == sorted(meta["blocks"]["modules_diffusers"])
    assert sub["confined"] and all(m.endswith(("attn2.to_k", "attn2.to_v")) for m in sub["confined"]) and sub["free"]
    # the file names layers as ComfyUI does; the prompt-reading ones are those whose input is the text width
    confined = [d for d in deltas.values() if d.ndim == 2 and d.shape[1] == sub["dim"]]
    free = [d for d in deltas.values() if not (d.ndim == 2 and d.shape[1] == sub["dim"])]
    assert len(confined) == len(sub["confined"]) and len(free) == len(sub["free"]) and all(d.abs().max() > 0 for d in free)
    assert 1 <= sub["rank"] < sub["dim"] and int(torch.linalg.matrix_rank(torch.cat(confined), rtol=1e-4)) <= sub["rank"]


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_adversary_steps_trains_against_a_soft_prompt_from_each_target_line(tiny_path, tmp_path, family):
    """--adversary-steps: a soft prompt per target line moved (the file says how far), and the weights differ from the
    same run without it (bad values: test_bad_inputs_stop_with_a_clear_error)."""
    out = {}
    for steps in (0, 2):
        out[steps] = tmp_path / f"adv{steps}"
        assert run(tiny_path(family), out[steps], "--concept", "Zorblax", "--target", "a painting of a harbour by {}", "--kind",
                   "artist", "--distractors", "Claude Monet", "Hokusai", *RETAIN, "--steps", "3", "--adversary-steps", str(steps),
                   "--lora-check-images", "0") == 0
    files = {}
    for steps, d in out.items():
        with safe_open(str(d / "Zorblax.safetensors"), "pt") as f:
            files[steps] = (json.loads(f.metadata()["surgun"]), {k: f.get_tensor(k) for k in f.keys()})
    meta, deltas = files[2]
    assert meta["adversary"]["steps"] == 2 == meta["hyperparameters"]["adversary_steps"]
    assert sorted(meta["adversary"]["drift"]) == sorted(meta["targets"]) and all(v > 0 for v in meta["adversary"]["drift"].values())
    assert "adversary" not in files[0][0] and any(not (deltas[k] == files[0][1][k]).all() for k in deltas)
