"""Custom socket types of the pack (upper case, shared by every node)."""

from comfy_api.latest import io

ErasedWeightsSocket = io.Custom("ERASED_WEIGHTS")
DistractorsSocket = io.Custom("DISTRACTORS")
BlocksSocket = io.Custom("BLOCKS")
