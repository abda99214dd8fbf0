"""SurgUn without ComfyUI: the same competition objective on diffusers pipelines.

SD1.x/SD2.x, SDXL and SANA(-1.5) pipelines; the training loop, guard, distractor selection and
localisation are ``surgun_core``'s, this package only supplies what is specific to diffusers:
per-family conditioning and native loss, trainable deltas on the denoiser's layers, sampling
with the pipeline itself, and the two output formats (the pack's ComfyUI weights file and a
LoRA that ``load_lora_weights`` reads). Nothing here imports ComfyUI.

Importing the package does no work; the command line is ``python -m surgun_diffusers``
(or ``surgun-diffusers``), the library entry point :func:`surgun_diffusers.erase.erase`.
"""

__version__ = "0.1.0"
