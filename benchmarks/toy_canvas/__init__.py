"""Toy canvas: a procedural 8 objects x 8 styles world, a classifier for it and a
tiny text-to-image diffusion model built from ComfyUI's own classes, used as a
CPU benchmark for concept erasure.

Nothing is imported or computed at import time; see ``world``, ``classifier``,
``model``, ``gate`` and ``constants``.
"""
