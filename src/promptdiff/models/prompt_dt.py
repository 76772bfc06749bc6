"""Prompt Decision Transformer (Xu et al., 2022): the pre-trained policy that promptdiff prompts.

A GPT-style causal transformer over interleaved (return-to-go, state, action) tokens. A trajectory
prompt (see `promptdiff.prompt`) with its own embedding layers is prepended to the K most
recent steps; one causal attention runs over all 3 (L + K) tokens. A learned timestep embedding
is added to every token (no positional embedding). Actions are predicted from the state tokens
of the main sequence, through a tanh head.

Shapes: states (B, K, obs_dim), actions (B, K, act_dim), returns_to_go (B, K, 1),
timesteps (B, K) long, mask (B, K) with 1 for real steps and 0 for left padding.

Two hooks serve the prompt-tuning baselines without touching the pre-trained weights: the prompt
may come already embedded (`PromptTokens`, soft prompts), and `forward(..., adapters=...)` adds
the output of one small module per transformer block to that block's output (adapters).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from promptdiff.prompt import Prompt, PromptTokens


class CausalSelfAttention(nn.Module):
    def __init__(self, width: int, heads: int, dropout: float):
        super().__init__()
        if width % heads:
            raise ValueError(f"width {width} is not divisible by heads {heads}")
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)
        self.dropout = dropout
        self.resid_drop = nn.Dropout(dropout)

    def _heads(self, t: torch.Tensor) -> torch.Tensor:
        """(B, T, W) -> (B, heads, T, W / heads)."""
        B, T, W = t.shape
        return t.view(B, T, self.heads, W // self.heads).transpose(1, 2)

    def keys_values(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values of tokens x (B, T, W), each (B, heads, T, W / heads)."""
        W = x.shape[-1]
        k, v = F.linear(x, self.qkv.weight[W:], self.qkv.bias[W:]).split(W, dim=-1)
        return self._heads(k), self._heads(v)

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor, past: tuple | None = None,
                queries: slice | None = None) -> torch.Tensor:  # fmt: skip
        """x (B, T, W); attn_bias (B, 1, T, S) additive: 0 where a query may look, very negative elsewhere.

        past: keys and values (B, heads, P, W / heads) of P earlier tokens (a cached prompt), put before x's own:
        S = P + T. queries: the positions of x whose outputs are wanted (all when None), e.g. only the tokens a
        loss or an action is read from; every token still serves as a key and value. -> (B, T', W), T' queries.
        """
        B, T, W = x.shape
        if past is None and queries is None:
            q, k, v = (self._heads(t) for t in self.qkv(x).split(W, dim=-1))
        else:
            k, v = self.keys_values(x)
            q = self._heads(F.linear(x if queries is None else x[:, queries], self.qkv.weight[:W], self.qkv.bias[:W]))
            if past is not None:
                k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)
            if queries is not None:
                attn_bias = attn_bias[:, :, queries]
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_bias,
                                           dropout_p=self.dropout if self.training else 0.0)  # fmt: skip
        return self.resid_drop(self.proj(y.transpose(1, 2).reshape(B, q.shape[2], W)))


class Block(nn.Module):
    """Pre-LayerNorm transformer block (GPT-2 layout) with a ReLU MLP."""

    def __init__(self, width: int, heads: int, mlp_width: int, dropout: float):
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = CausalSelfAttention(width, heads, dropout)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, mlp_width), nn.ReLU(), nn.Linear(mlp_width, width), nn.Dropout(dropout))

    def forward(self, x: torch.Tensor, attn_bias: torch.Tensor, past: tuple | None = None,
                queries: slice | None = None) -> torch.Tensor:  # fmt: skip
        """See `CausalSelfAttention.forward` for `past` and `queries` (then the output holds those positions only)."""
        x = (x if queries is None else x[:, queries]) + self.attn(self.ln1(x), attn_bias, past, queries)
        return x + self.mlp(self.ln2(x))


@dataclass
class PromptCache:
    """A prompt as every block of one PLM sees it: the keys and values of its 3 L tokens per block,
    keys/values (P, blocks, heads, 3 L, W / heads), and its token mask (P, 3 L)."""

    keys: torch.Tensor
    values: torch.Tensor
    token_mask: torch.Tensor

    def index(self, idx) -> "PromptCache":
        """Select prompts (rows) by index."""
        return PromptCache(self.keys[idx], self.values[idx], self.token_mask[idx])


class _StepEmbedding(nn.Module):
    """Embeds (return-to-go, state, action) of each step into three tokens, plus timestep."""

    def __init__(self, obs_dim: int, act_dim: int, width: int, max_timestep: int):
        super().__init__()
        self.timestep = nn.Embedding(max_timestep, width)
        self.ret = nn.Linear(1, width)
        self.state = nn.Linear(obs_dim, width)
        self.action = nn.Linear(act_dim, width)

    def forward(self, states, actions, returns_to_go, timesteps) -> torch.Tensor:
        """-> (B, 3 T, width), ordered R_1, s_1, a_1, R_2, ..."""
        t = self.timestep(timesteps)
        tokens = torch.stack([self.ret(returns_to_go) + t, self.state(states) + t, self.action(actions) + t], dim=2)
        B, T = states.shape[:2]
        return tokens.reshape(B, 3 * T, -1)


class PromptDT(nn.Module):
    """Prompt Decision Transformer; reference defaults: 3 layers, 1 head, width 128, MLP 512."""

    def __init__(self, obs_dim: int, act_dim: int, *, width: int = 128, layers: int = 3, heads: int = 1,
                 mlp_width: int = 512, dropout: float = 0.1, context_length: int = 20, prompt_length: int = 5,
                 max_timestep: int = 1000):  # fmt: skip
        super().__init__()
        self.obs_dim, self.act_dim = obs_dim, act_dim
        self.context_length, self.prompt_length = context_length, prompt_length
        self.max_timestep = max_timestep
        self.embed = _StepEmbedding(obs_dim, act_dim, width, max_timestep)
        self.prompt_embed = _StepEmbedding(obs_dim, act_dim, width, max_timestep)
        self.embed_ln = nn.LayerNorm(width)
        self.embed_drop = nn.Dropout(dropout)
        self.blocks = nn.ModuleList(Block(width, heads, mlp_width, dropout) for _ in range(layers))
        self.final_ln = nn.LayerNorm(width)
        self.action_head = nn.Sequential(nn.Linear(width, act_dim), nn.Tanh())
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def embed_prompt(self, prompt: Prompt) -> PromptTokens:
        """The prompt as the transformer sees it: 3 L tokens per prompt (the soft-prompt starting point)."""
        tokens = self.prompt_embed(prompt.states, prompt.actions, prompt.returns_to_go, prompt.timesteps)
        return PromptTokens(tokens, prompt.mask)

    def forward(self, states, actions, returns_to_go, timesteps, mask, prompt: Prompt | PromptTokens | None = None,
                adapters: nn.ModuleList | None = None) -> torch.Tensor:  # fmt: skip
        """Predicted actions (B, K, act_dim), one per step, from the state token of that step.

        adapters: one module per block; block i's output x becomes x + adapters[i](x).
        No work is spent on what no prediction reads: the last step's action token is left out (no token
        after it looks at it), and the last block computes queries, MLP and output only at the main
        sequence's state tokens (every token still gives it keys and values).
        """
        B, K = states.shape[:2]
        tokens = self.embed_ln(self.embed(states, actions, returns_to_go, timesteps))[:, :-1]
        token_mask = mask.repeat_interleave(3, dim=1)[:, :-1]
        if prompt is not None:
            prompt = prompt.expand(B)
            p_tokens = prompt.tokens if isinstance(prompt, PromptTokens) else self.embed_prompt(prompt).tokens
            tokens = torch.cat([p_tokens, tokens], dim=1)
            token_mask = torch.cat([prompt.mask.to(token_mask.dtype).repeat_interleave(3, dim=1), token_mask], dim=1)
        x = self.embed_drop(tokens)
        bias = self._attention_bias(token_mask, x.dtype)
        if adapters is not None and len(adapters) != len(self.blocks):
            raise ValueError(f"{len(adapters)} adapters for {len(self.blocks)} transformer blocks")
        n = len(self.blocks)
        for i, block in enumerate(self.blocks):
            # the last block only where actions are read: the main sequence's state tokens (3 K - 1 tokens here)
            x = block(x, bias, queries=slice(x.shape[1] - 3 * K + 2, None, 3) if i == n - 1 else None)
            if adapters is not None:
                x = x + adapters[i](x)
        return self.action_head(self.final_ln(x))

    # -- acting step by step: the prompt computed once, only the last action --------------------
    def prompt_cache(self, prompt: Prompt | PromptTokens, adapters: nn.ModuleList | None = None) -> PromptCache:
        """The prompt's keys and values at every block. The prompt's tokens come first and attend only to each
        other, so they are the same at every step of an episode: `act_last` reuses them instead of recomputing
        the prompt with every window."""
        p_tokens = prompt.tokens if isinstance(prompt, PromptTokens) else self.embed_prompt(prompt).tokens
        token_mask = prompt.mask.to(p_tokens.dtype).repeat_interleave(3, dim=1)
        x = self.embed_drop(p_tokens)
        bias = self._attention_bias(token_mask, x.dtype)
        keys, values = [], []
        for i, block in enumerate(self.blocks):
            k, v = block.attn.keys_values(block.ln1(x))
            keys.append(k)
            values.append(v)
            if i + 1 < len(self.blocks) or adapters is not None:
                x = block(x, bias)
                if adapters is not None:
                    x = x + adapters[i](x)
        return PromptCache(torch.stack(keys, dim=1), torch.stack(values, dim=1), token_mask)

    def act_last(self, states, actions, returns_to_go, timesteps, mask, cache: PromptCache | None = None,
                 adapters: nn.ModuleList | None = None) -> torch.Tensor:  # fmt: skip
        """The action (B, act_dim) at the last step of each window: `forward(...)[:, -1]` with the prompt taken
        from `cache` and no work spent on what that action does not depend on (the last step's action token;
        the last block's queries, MLP and head for every token but the last state token). Windows may be shorter
        than K: leading steps that are padding in every row change nothing and may be left out."""
        x = self.embed_ln(self.embed(states, actions, returns_to_go, timesteps))[:, :-1]  # up to the last state
        token_mask = mask.to(x.dtype).repeat_interleave(3, dim=1)[:, :-1]
        bias = self._attention_bias(token_mask, x.dtype)
        if cache is not None:
            prompt_bias = self._attention_bias(cache.token_mask, x.dtype, queries=x.shape[1], causal=False)
            bias = torch.cat([prompt_bias, bias], dim=-1)
        x = self.embed_drop(x)
        n = len(self.blocks)
        for i, block in enumerate(self.blocks):
            last = i == n - 1
            past = None if cache is None else (cache.keys[:, i], cache.values[:, i])
            x = block(x, bias, past, queries=slice(-1, None) if last else None)
            if adapters is not None:
                x = x + adapters[i](x)
        return self.action_head(self.final_ln(x[:, -1]))

    @staticmethod
    def _attention_bias(token_mask: torch.Tensor, dtype: torch.dtype, queries: int | None = None,
                        causal: bool = True) -> torch.Tensor:  # fmt: skip
        """(B, 1, queries, T) additive bias over keys with `token_mask` (B, T): padded keys hidden and, when
        `causal` (queries = the same T tokens), key j hidden from query i < j; never -inf (no NaN rows)."""
        T = token_mask.shape[1]
        allowed = token_mask.bool()[:, None, :]
        if causal:
            allowed = allowed & torch.ones(T, T, dtype=torch.bool, device=token_mask.device).tril()[None]
        else:
            allowed = allowed.expand(-1, T if queries is None else queries, -1)
        bias = torch.zeros(allowed.shape, dtype=dtype, device=token_mask.device)
        return bias.masked_fill(~allowed, torch.finfo(dtype).min / 2)[:, None]


def masked_action_mse(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean squared error over real (mask = 1) steps: pred, target (B, K, act_dim), mask (B, K)."""
    m = mask.to(pred.dtype).unsqueeze(-1)
    return ((pred - target) ** 2 * m).sum() / (m.sum() * pred.shape[-1]).clamp_min(1.0)
