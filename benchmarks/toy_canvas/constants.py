"""Shipped sampler settings of the toy canvas model, in one place.

The quality gate (``gate.py``) and the erasure benchmark reuse these. They are
what ComfyUI's KSampler node takes: sampler_name, scheduler, steps, cfg.
"""

SAMPLER_NAME = "euler"
SCHEDULER = "normal"
STEPS = 20
CFG = 4.0
DENOISE = 1.0
NEGATIVE_PROMPT = ""

# latent: 3 x 32 x 32 pixels (ChromaRadiance-style pixel latent)
WIDTH = 32
HEIGHT = 32

# quality gate: images per (object, style) prompt and the seed of its noise
GATE_IMAGES_PER_PROMPT = 4
GATE_SEED = 1234
GATE_MIN_ACCURACY = 0.90

SAMPLER_SETTINGS = {
    "sampler_name": SAMPLER_NAME,
    "scheduler": SCHEDULER,
    "steps": STEPS,
    "cfg": CFG,
    "denoise": DENOISE,
    "negative_prompt": NEGATIVE_PROMPT,
    "width": WIDTH,
    "height": HEIGHT,
}
