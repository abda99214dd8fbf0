"""Tiny pure-torch stand-ins for a text-conditioned denoiser (no ComfyUI here)."""

import torch


class TinyDenoiser(torch.nn.Module):
    """eps-predictor on 8-d vectors, conditioned by a prompt embedding through a 'cross-attention' layer."""

    def __init__(self, prompts, dim=8, ctx=6, seed=0):
        super().__init__()
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            self._build(prompts, dim, ctx)

    def _build(self, prompts, dim, ctx):
        g = torch.Generator().manual_seed(12345)
        self.prompts = {p: i for i, p in enumerate(prompts)}
        self.register_buffer("table", torch.randn(len(prompts), ctx, generator=g))
        self.block = torch.nn.Module()
        self.block.attn2 = torch.nn.Module()
        self.block.attn2.to_k = torch.nn.Linear(ctx, 16)
        self.block.attn2.to_v = torch.nn.Linear(ctx, 16)
        self.block.attn1 = torch.nn.Module()
        self.block.attn1.to_q = torch.nn.Linear(dim + 1, 16)
        self.block.norm = torch.nn.LayerNorm(16)
        self.out = torch.nn.Linear(16, dim)

    def forward(self, x, sigma, prompts, contexts=None):
        contexts = contexts or {}  # a name in contexts reads that tensor instead of a prompt's row (a soft prompt)
        c = torch.stack([contexts[p].reshape(-1) if p in contexts else self.table[self.prompts[p]] for p in prompts])
        h = self.block.norm(self.block.attn1.to_q(torch.cat([x, sigma[:, None]], dim=1)))
        h = h * torch.sigmoid(self.block.attn2.to_k(c)) + self.block.attn2.to_v(c)
        return self.out(h)  # unbounded in the trained weights, so unguarded ascent can run away


def eps_loss_fn(model):
    def loss_fn(x0, prompts, g, noise_rows=None, contexts=None, percents=None):
        noise = torch.randn(x0.shape, generator=g)
        sigma = torch.rand(x0.shape[0], generator=g) * 2 + 0.05
        if percents is not None:  # a fixed level per sample (percent of the schedule, 0 = the noisiest)
            sigma = torch.where(torch.isnan(percents), sigma, 0.05 + 2 * (1 - percents.float()))
        if noise_rows is not None:  # TrainConfig.shared_noise: a row takes another row's noise and level
            noise, sigma = noise[list(noise_rows)], sigma[list(noise_rows)]
        xt = x0 + sigma[:, None] * noise
        return ((model(xt, sigma, list(prompts), contexts) - noise) ** 2).mean(dim=1)
    return loss_fn


