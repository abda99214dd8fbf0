"""Sharing work between processes started by ``accelerate launch`` (or torchrun).

* **Batch** (a list of concepts): each process takes every ``world``-th pending concept and
  writes its own files; the main process writes the summary once all are done.
* **Data-parallel** (one concept on all processes): sampling is shared out by prompt and the
  latents gathered on every process; training draws differ per process (seed + rank) and the
  gradients of the deltas are averaged across processes after each backward pass (all-reduce),
  so every process takes the same optimiser step and holds the same deltas.

Without a launcher (one process) everything runs locally and Accelerate is not imported.
"""

from __future__ import annotations

import os
from typing import Sequence

import torch


class Dist:
    def __init__(self, device: torch.device):
        self.world = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = 0
        self.state = None
        if self.world > 1:
            from accelerate import PartialState

            self.state = PartialState(cpu=device.type == "cpu")
            self.world = self.state.num_processes
            self.rank = self.state.process_index

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def local_rank(self) -> int:
        return self.state.local_process_index if self.state is not None else 0

    def barrier(self) -> None:
        if self.state is not None:
            self.state.wait_for_everyone()

    def gather_object(self, obj) -> list:
        if self.state is None:
            return [obj]
        from accelerate.utils import gather_object

        return gather_object([obj])

    def shard(self, items: Sequence) -> list:
        return list(items)[self.rank::self.world]

    def sampler(self, local):
        """A sampler for :func:`surgun_diffusers.erase.erase` that shares prompts out and gathers the latents."""

        def run(pipe, family, prompts, sampling, seed, tick):
            share = self.shard(prompts)
            mine = local(pipe, family, share, sampling, seed, tick)
            for _ in range((len(prompts) - len(share)) * sampling.steps):  # the other processes' part of the bar
                tick()
            merged: dict[str, torch.Tensor] = {}
            for part in self.gather_object({k: v.cpu() for k, v in mine.items()}):
                merged.update(part)
            return {p: merged[p] for p in prompts}

        return run

    def grad_sync(self, params: Sequence[torch.Tensor]):
        """Average each parameter's gradient over the processes as soon as it is accumulated."""
        import torch.distributed as tdist

        world = self.world

        def hook(p: torch.Tensor) -> None:
            tdist.all_reduce(p.grad, op=tdist.ReduceOp.SUM)
            p.grad.div_(world)

        return _Handles([p.register_post_accumulate_grad_hook(hook) for p in params])


class _Handles:
    def __init__(self, handles):
        self.handles = handles

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
