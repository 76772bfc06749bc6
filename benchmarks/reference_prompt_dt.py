"""The reference Prompt-DT, rebuilt from its published architecture on `transformers`' GPT-2.

The public Prompt-DT code (Xu et al., 2022) runs the Decision Transformer's GPT-2 (positional
embedding removed) over interleaved (return-to-go, state, action) tokens with the prompt's tokens
in front: 3 layers, 1 head, width 128, MLP 4 x 128 with ReLU, dropout 0.1 everywhere, a learned
timestep embedding added to every token, one LayerNorm over the embedded main sequence, and
three heads over the main sequence (action from state tokens, through tanh; state and return
from action tokens). This module builds that model from `transformers.GPT2Model` (its own
blocks, masks and dropout; the positional table is frozen at zero, which is what "removed"
computes) so `plm_step_vs_reference.py` can time promptdiff's `PromptDT` against it on identical
batches. `copy_weights_from` gives it the weights of a `PromptDT`; then both compute the same
actions and the same loss (tests/test_reference_model.py).

Needs `transformers` (in the `test` extra).
"""

from __future__ import annotations

import torch
from torch import nn
from transformers import GPT2Config, GPT2Model


class ReferencePromptDT(nn.Module):
    def __init__(self, obs_dim: int, act_dim: int, *, width: int = 128, layers: int = 3, heads: int = 1,
                 mlp_width: int = 512, dropout: float = 0.1, max_timestep: int = 1000, max_tokens: int = 1024):  # fmt: skip
        super().__init__()
        config = GPT2Config(vocab_size=1, n_positions=max_tokens, n_embd=width, n_layer=layers, n_head=heads,
                            n_inner=mlp_width, activation_function="relu", resid_pdrop=dropout, embd_pdrop=dropout,
                            attn_pdrop=dropout, layer_norm_epsilon=1e-5, bos_token_id=0, eos_token_id=0)  # fmt: skip
        self.transformer = GPT2Model(config)
        self.transformer.wpe.weight.data.zero_()
        self.transformer.wpe.weight.requires_grad_(False)
        self.embed_timestep, self.prompt_embed_timestep = nn.Embedding(max_timestep, width), nn.Embedding(max_timestep, width)
        self.embed_return, self.prompt_embed_return = nn.Linear(1, width), nn.Linear(1, width)
        self.embed_state, self.prompt_embed_state = nn.Linear(obs_dim, width), nn.Linear(obs_dim, width)
        self.embed_action, self.prompt_embed_action = nn.Linear(act_dim, width), nn.Linear(act_dim, width)
        self.embed_ln = nn.LayerNorm(width)
        self.predict_state = nn.Linear(width, obs_dim)
        self.predict_return = nn.Linear(width, 1)
        self.predict_action = nn.Sequential(nn.Linear(width, act_dim), nn.Tanh())

    @staticmethod
    def _stack(ret, state, action, time) -> torch.Tensor:
        t = time
        B, T = t.shape[:2]
        return torch.stack((ret + t, state + t, action + t), dim=1).permute(0, 2, 1, 3).reshape(B, 3 * T, -1)

    def forward(self, states, actions, returns_to_go, timesteps, mask, prompt):
        """(action, state, return) predictions over the main sequence: (B, K, act_dim), (B, K, obs_dim), (B, K, 1)."""
        B, K = states.shape[:2]
        x = self.embed_ln(self._stack(self.embed_return(returns_to_go), self.embed_state(states),
                                      self.embed_action(actions), self.embed_timestep(timesteps)))  # fmt: skip
        p = self._stack(self.prompt_embed_return(prompt.returns_to_go), self.prompt_embed_state(prompt.states),
                        self.prompt_embed_action(prompt.actions), self.prompt_embed_timestep(prompt.timesteps))  # fmt: skip
        tokens = torch.cat([p, x], dim=1)
        token_mask = torch.cat([prompt.mask, mask], dim=1).repeat_interleave(3, dim=1).long()
        h = self.transformer(inputs_embeds=tokens, attention_mask=token_mask).last_hidden_state
        h = h[:, -3 * K :].reshape(B, K, 3, -1).permute(0, 2, 1, 3)
        return self.predict_action(h[:, 1]), self.predict_state(h[:, 2]), self.predict_return(h[:, 2])

    @torch.no_grad()
    def copy_weights_from(self, model) -> "ReferencePromptDT":
        """Take a `promptdiff.models.PromptDT`'s weights (same sizes). GPT-2's Conv1D keeps (in, out) weights."""
        pairs = [(self.embed_timestep, model.embed.timestep), (self.embed_return, model.embed.ret),
                 (self.embed_state, model.embed.state), (self.embed_action, model.embed.action),
                 (self.prompt_embed_timestep, model.prompt_embed.timestep), (self.prompt_embed_return, model.prompt_embed.ret),
                 (self.prompt_embed_state, model.prompt_embed.state), (self.prompt_embed_action, model.prompt_embed.action),
                 (self.embed_ln, model.embed_ln), (self.transformer.ln_f, model.final_ln),
                 (self.predict_action[0], model.action_head[0])]  # fmt: skip
        for mine, theirs in pairs:
            mine.load_state_dict(theirs.state_dict())
        for mine, theirs in zip(self.transformer.h, model.blocks, strict=True):
            mine.ln_1.load_state_dict(theirs.ln1.state_dict())
            mine.ln_2.load_state_dict(theirs.ln2.state_dict())
            for conv, linear in [(mine.attn.c_attn, theirs.attn.qkv), (mine.attn.c_proj, theirs.attn.proj),
                                 (mine.mlp.c_fc, theirs.mlp[0]), (mine.mlp.c_proj, theirs.mlp[2])]:  # fmt: skip
                conv.weight.copy_(linear.weight.T)
                conv.bias.copy_(linear.bias)
        return self


def reference_loss(model: ReferencePromptDT, batch: dict) -> torch.Tensor:
    """The reference's training loss: mean squared action error over real steps (the other heads are computed,
    as the reference does, but not trained)."""
    seg = batch["segment"]
    pred = model(seg["states"], seg["actions"], seg["returns_to_go"], seg["timesteps"], seg["mask"], batch["prompt"])[0]
    real = seg["mask"].reshape(-1) > 0
    return ((pred.reshape(-1, pred.shape[-1])[real] - seg["actions"].reshape(-1, pred.shape[-1])[real]) ** 2).mean()
