"""Trainable additive deltas on a diffusers denoiser, split as PEFT splits its tuners:
``config`` (which layers), ``layer`` (one wrapped layer), ``model`` (injecting into and
restoring a whole network)."""
