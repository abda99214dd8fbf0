"""An adversary inside the competition: a soft prompt that keeps looking for the erased concept.

A soft-prompt attack recovers an erasure by optimising the model's text context (not the words) until
the erased model denoises the target's images again. AdvUnlearn (Zhang et al., 2024) trains against
that attack; this is its inner loop in SurgUn's terms, kept cheap by warm starts:

* one context per target prompt, starting at that prompt's own context;
* each training step moves it ``steps`` Adam steps (lr ``lr``) toward denoising a target sample under
  the current weights, i.e. toward the context that brings the concept back (only the context moves;
  the weights' gradients are untouched);
* the step then runs the competition a second time under that context: the same target sample is
  pushed away (ascent, still bounded by the guard) and the same distractor samples are drawn toward
  (descent), so the prompt's mass moves onto the distractors for the contexts an attacker would find
  as well as for the words the user typed.

Rows under an adversarial context carry the name :func:`soft_name` gives; a loss function that takes
``contexts`` (name -> context tensor) conditions them on that tensor instead of an encoded prompt.
"""

from __future__ import annotations

from typing import Callable, Mapping

import torch

from .errors import SurgUnError, short

PREFIX = "\u241fsoft prompt for: "
"""Names of adversarial rows: the prefix and the prompt whose context they started from."""


def soft_name(prompt: str) -> str:
    return PREFIX + prompt


def base_prompt(name: str) -> str | None:
    """The prompt an adversarial row's context started from; None for an ordinary prompt."""
    return name[len(PREFIX):] if name.startswith(PREFIX) else None


class SoftPromptAdversary:
    def __init__(self, contexts: Mapping[str, torch.Tensor], steps: int, lr: float):
        """``contexts``: target prompt -> its context (the tensor the model reads in place of the words)."""
        if not isinstance(steps, int) or steps < 1:
            raise SurgUnError(f"[SurgUn] adversary_steps must be an integer >= 1 here (0 turns the adversary off), got {steps!r}.")
        if not contexts:
            raise SurgUnError("[SurgUn] the adversary needs the target prompts' contexts; none were given.")
        self.steps = steps
        self.context = {soft_name(p): c.detach().clone().float().requires_grad_(True) for p, c in contexts.items()}
        self._opt = {n: torch.optim.Adam([c], lr=lr) for n, c in self.context.items()}
        self.drift: dict[str, float] = {p: 0.0 for p in contexts}
        """Per target prompt: how far its soft prompt has moved from the prompt's own context (relative L2 norm)."""
        self._start = {n: c.detach().clone() for n, c in self.context.items()}

    def contexts(self) -> dict[str, torch.Tensor]:
        """The current contexts, detached: the weights train against them, the contexts stay where they are."""
        return {n: c.detach() for n, c in self.context.items()}

    def attack(self, loss_fn: Callable, x0: torch.Tensor, prompt: str, g: torch.Generator) -> float:
        """Move ``prompt``'s soft prompt ``steps`` Adam steps toward denoising ``x0`` (target samples);
        returns the last attack loss. Noise and levels come from ``g``."""
        name = soft_name(prompt)
        if name not in self.context:
            raise SurgUnError(f"[SurgUn] the adversary has no soft prompt for the target prompt {short(prompt)}.")
        ctx, opt = self.context[name], self._opt[name]
        loss = torch.zeros(())
        for _ in range(self.steps):
            loss = loss_fn(x0, [name] * x0.shape[0], g, contexts={name: ctx}).mean()
            (grad,) = torch.autograd.grad(loss, [ctx])  # the weights' .grad stay as they were
            opt.zero_grad(set_to_none=True)
            ctx.grad = grad
            opt.step()
        start = self._start[name]
        self.drift[prompt] = float((ctx.detach() - start).norm() / start.norm().clamp_min(1e-12))
        return float(loss.detach())
