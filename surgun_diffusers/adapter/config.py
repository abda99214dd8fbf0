"""Which layers of the denoiser get a trainable delta."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from surgun_core.errors import SurgUnError


@dataclass(frozen=True)
class DeltaConfig:
    """Layers to train, with PEFT's matching rules (``surgun_core.selection``).

    ``target_modules`` is a full regular expression over module names, or a list of names or
    name suffixes; a matched container (an attention block) stands for every Linear/Conv2d
    layer inside it.
    """

    target_modules: str | Sequence[str]

    def validate(self) -> None:
        t = self.target_modules
        if (isinstance(t, str) and not t.strip()) or (not isinstance(t, str) and not [x for x in t if x]):
            raise SurgUnError(
                "[SurgUn] no layers to train: target_modules is empty. Pick a preset (cross_attention) or give "
                "module names, e.g. 'attn2' or 're:.*attn2\\.to_k'."
            )
