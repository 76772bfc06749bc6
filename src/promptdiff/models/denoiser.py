"""The Prompt Diffuser's denoising network: a condition encoder and an injected backbone.

x is a flattened prompt window of L steps, x_dim = L * (obs_dim + act_dim + 1) (states, actions,
rewards); the condition y is the window's returns-to-go and timesteps. `PromptDenoiser` follows the
model protocol of `promptdiff.models.diffusion.GaussianDiffusion`:

    model(xt (B, x_dim), t (B,) int64, cond, drop (B,) bool or None) -> (B, x_dim)

with cond = {"returns_to_go": (B, L) float, "timesteps": (B, L) int64}. It encodes y into a vector
(`ReturnTimestepEncoder`) and hands it to its BACKBONE, any module built as

    Backbone(x_dim=..., cond_dim=..., prompt_length=..., **sizes)
    backbone(xt (B, x_dim), t (B,), cond_vec (B, cond_dim)) -> (B, x_dim)

`MLPDenoiser` (the default, a residual MLP) and `TransformerDenoiser` (attention over the L steps,
`promptdiff.models.transformer_denoiser`) are the two shipped; `build_backbone` builds one from a
{"class_path", "init_args"} spec, as a config names it.
"""

from __future__ import annotations

import math

import torch
from torch import nn


class SinusoidalEmbedding(nn.Module):
    """Transformer-style features of a scalar: t (B,) int or float -> (B, dim) = [sin(t f_k), cos(t f_k)].

    Frequencies f_k = 10000^(-k / half), k = 0 .. half-1, half = dim // 2; an odd dim gets a zero last column.
    """

    def __init__(self, dim: int):
        super().__init__()
        if dim < 2:
            raise ValueError(f"dim must be >= 2, got {dim}")
        self.dim = dim
        half = dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, dtype=torch.float32) / half)
        self.register_buffer("freqs", freqs, persistent=False)

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        args = t.to(self.freqs.dtype).reshape(-1, 1) * self.freqs
        emb = torch.cat([torch.sin(args), torch.cos(args)], dim=-1)
        if self.dim % 2:
            emb = nn.functional.pad(emb, (0, 1))
        return emb


class ReturnTimestepEncoder(nn.Module):
    """Encodes the condition y of a length-L prompt window into a vector (B, dim).

    Per position, the return-to-go is concatenated with a learned timestep embedding (timestep_dim);
    the (B, L, 1 + timestep_dim) result is flattened and mapped by Linear -> SiLU -> Linear to dim.
    A learned null vector (dim,) stands for "no condition" (classifier-free guidance).

    Args:
        prompt_length: L.
        max_timestep: rows of the timestep table; timesteps are clamped to [0, max_timestep - 1].
        dim: output size.
        timestep_dim: size of the timestep embedding.
    """

    def __init__(self, prompt_length: int = 5, max_timestep: int = 1000, dim: int = 64, timestep_dim: int = 16):
        super().__init__()
        self.prompt_length, self.max_timestep, self.dim = prompt_length, max_timestep, dim
        self.timestep = nn.Embedding(max_timestep, timestep_dim)
        self.mlp = nn.Sequential(nn.Linear(prompt_length * (1 + timestep_dim), dim), nn.SiLU(), nn.Linear(dim, dim))
        self.null = nn.Parameter(torch.randn(dim) * 0.02)

    def forward(self, returns_to_go: torch.Tensor, timesteps: torch.Tensor,
                drop: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
        """returns_to_go (B, L) float (or (B, L, 1)), timesteps (B, L) int, drop None or (B,) bool -> (B, dim).

        Rows where drop is True are the null vector.
        """
        if returns_to_go.dim() == 3 and returns_to_go.shape[-1] == 1:
            returns_to_go = returns_to_go.squeeze(-1)
        B, L = returns_to_go.shape
        if L != self.prompt_length or tuple(timesteps.shape) != (B, L):
            raise ValueError(f"expected returns_to_go and timesteps of shape (B, {self.prompt_length}), got "
                             f"{tuple(returns_to_go.shape)} and {tuple(timesteps.shape)}")  # fmt: skip
        emb = self.timestep(timesteps.long().clamp(0, self.max_timestep - 1))
        feats = torch.cat([returns_to_go.to(emb.dtype).unsqueeze(-1), emb], dim=-1)
        out = self.mlp(feats.flatten(1))
        if drop is not None:
            out = torch.where(drop.reshape(B, 1).bool(), self.null.to(out.dtype).expand_as(out), out)
        return out


class ResidualBlock(nn.Module):
    """h + Linear(SiLU(Linear(LayerNorm(h))) + c): h (B, hidden), c (B, hidden) the conditioning shift."""

    def __init__(self, hidden: int):
        super().__init__()
        self.norm = nn.LayerNorm(hidden)
        self.fc1 = nn.Linear(hidden, hidden)
        self.act = nn.SiLU()
        self.fc2 = nn.Linear(hidden, hidden)

    def forward(self, h: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        return h + self.fc2(self.act(self.fc1(self.norm(h))) + c)


class MLPDenoiser(nn.Module):
    """Residual MLP denoiser: xt (B, x_dim), diffusion step t (B,), condition vector (B, cond_dim) -> (B, x_dim).

    Layout: Linear(x_dim, hidden); `blocks` x [LayerNorm -> Linear -> SiLU -> (+ c) -> Linear, residual add];
    LayerNorm -> Linear(hidden, x_dim) (zero-initialised, so an untrained model outputs 0).

    Conditioning: the diffusion step's sinusoidal features (time_dim) go through Linear -> SiLU -> Linear,
    are concatenated with the condition vector, and SiLU -> Linear(time_dim + cond_dim, hidden) gives one
    additive shift c that every block adds before its second Linear. The projection is shared by the blocks
    (each block's own second Linear still maps c differently), which keeps the default model under 0.3 M
    parameters.
    """

    def __init__(self, x_dim: int, cond_dim: int, hidden: int = 192, blocks: int = 2, time_dim: int = 64,
                 prompt_length: int | None = None):  # fmt: skip
        super().__init__()
        del prompt_length  # part of the backbone protocol; the MLP sees the window flattened
        self.x_dim, self.cond_dim = x_dim, cond_dim
        self.time_embed = nn.Sequential(SinusoidalEmbedding(time_dim), nn.Linear(time_dim, time_dim), nn.SiLU(),
                                        nn.Linear(time_dim, time_dim))  # fmt: skip
        self.cond_proj = nn.Sequential(nn.SiLU(), nn.Linear(time_dim + cond_dim, hidden))
        self.input = nn.Linear(x_dim, hidden)
        self.blocks = nn.ModuleList(ResidualBlock(hidden) for _ in range(blocks))
        self.out_norm = nn.LayerNorm(hidden)
        self.output = nn.Linear(hidden, x_dim)
        nn.init.zeros_(self.output.weight)
        nn.init.zeros_(self.output.bias)

    def forward(self, xt: torch.Tensor, t: torch.Tensor, cond_vec: torch.Tensor) -> torch.Tensor:
        """xt (B, x_dim), t (B,) int or float, cond_vec (B, cond_dim) -> (B, x_dim)."""
        c = self.cond_proj(torch.cat([self.time_embed(t).to(xt.dtype), cond_vec], dim=-1))
        h = self.input(xt)
        for block in self.blocks:
            h = block(h, c)
        return self.output(self.out_norm(h))


DEFAULT_BACKBONE = {"class_path": "promptdiff.models.MLPDenoiser",
                    "init_args": {"hidden": 192, "blocks": 2, "time_dim": 64}}


def build_backbone(spec: dict | None, x_dim: int, cond_dim: int, prompt_length: int) -> nn.Module:
    """A backbone from {"class_path": "module.Class" (or a bare class name of promptdiff.models), "init_args": {...}}
    (None: the default MLP), built with the sizes the diffuser fixes (x_dim, cond_dim, prompt_length)."""
    import importlib

    spec = DEFAULT_BACKBONE if spec is None else spec
    if not isinstance(spec, dict) or "class_path" not in spec or set(spec) - {"class_path", "init_args"}:
        raise ValueError(f"a denoiser is given as {{class_path: ..., init_args: {{...}}}}, got {spec!r}")
    path = spec["class_path"] if "." in spec["class_path"] else f"promptdiff.models.{spec['class_path']}"
    module, _, name = path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f"denoiser class_path {spec['class_path']!r} cannot be imported ({err})") from err
    init = dict(spec.get("init_args") or {})
    fixed = sorted({"x_dim", "cond_dim", "prompt_length"} & set(init))
    if fixed:
        raise ValueError(f"denoiser init_args must not set {fixed}: the diffuser fixes them")
    return cls(x_dim=x_dim, cond_dim=cond_dim, prompt_length=prompt_length, **init)


class PromptDenoiser(nn.Module):
    """The Prompt Diffuser network: ReturnTimestepEncoder + a backbone, in the diffusion model protocol.

    forward(xt (B, x_dim), t (B,) int64, cond, drop None or (B,) bool) -> (B, x_dim), where cond is a dict
    {"returns_to_go": (B, L) float, "timesteps": (B, L) int64}; rows with drop True use the null condition.
    `backbone` is a spec for `build_backbone` (None: the default MLP).
    """

    def __init__(self, x_dim: int, prompt_length: int = 5, max_timestep: int = 1000, cond_dim: int = 64,
                 backbone: dict | None = None):  # fmt: skip
        super().__init__()
        self.x_dim, self.prompt_length = x_dim, prompt_length
        self.encoder = ReturnTimestepEncoder(prompt_length, max_timestep, dim=cond_dim)
        self.denoiser = build_backbone(backbone, x_dim, cond_dim, prompt_length)

    def forward(self, xt: torch.Tensor, t: torch.Tensor, cond: dict, drop: torch.Tensor | None = None) -> torch.Tensor:
        cond_vec = self.encoder(cond["returns_to_go"], cond["timesteps"], drop)
        return self.denoiser(xt, t, cond_vec)

    @property
    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
