"""Prompt-DT: shapes, causality, padding, the prompt interface and the masked loss."""

import pytest
import torch

from promptdiff.prompt import Prompt, PromptTokens
from promptdiff.units import ACTION_PAD
from promptdiff.models.prompt_dt import PromptDT, masked_action_mse

OBS, ACT, K, L = 5, 3, 6, 4


def batch(B, K=K, seed=0):
    g = torch.Generator().manual_seed(seed)
    return dict(
        states=torch.randn(B, K, OBS, generator=g),
        actions=torch.rand(B, K, ACT, generator=g) * 2 - 1,
        returns_to_go=torch.randn(B, K, 1, generator=g),
        timesteps=torch.arange(K).repeat(B, 1),
        mask=torch.ones(B, K),
    )


def prompt(P, seed=1):
    g = torch.Generator().manual_seed(seed)
    return Prompt(torch.randn(P, L, OBS, generator=g), torch.rand(P, L, ACT, generator=g) * 2 - 1,
                  torch.randn(P, L, 1, generator=g), torch.arange(L).repeat(P, 1) + 10, torch.ones(P, L))


@pytest.fixture
def model():
    torch.manual_seed(0)
    return PromptDT(OBS, ACT, width=32, layers=2, heads=2, mlp_width=64, context_length=K, prompt_length=L).eval()


def test_reference_defaults():
    m = PromptDT(27, 8)
    assert len(m.blocks) == 3 and m.blocks[0].attn.heads == 1
    assert m.blocks[0].mlp[0].out_features == 512 and m.embed_ln.normalized_shape == (128,)
    assert m.context_length == 20 and m.prompt_length == 5 and m.embed.timestep.num_embeddings == 1000


def test_output_shape_and_tanh_range(model):
    out = model(**batch(3), prompt=prompt(3))
    assert out.shape == (3, K, ACT) and out.abs().max() <= 1


def test_causal_future_steps_do_not_change_past_predictions(model):
    b = batch(2)
    out = model(**b, prompt=prompt(2))
    b2 = {k: v.clone() for k, v in b.items()}
    b2["states"][:, 4:] += 5.0
    b2["actions"][:, 3:] = -b2["actions"][:, 3:]
    out2 = model(**b2, prompt=prompt(2))
    torch.testing.assert_close(out[:, :4], out2[:, :4])
    assert not torch.allclose(out[:, 4:], out2[:, 4:])


def test_action_of_current_step_is_not_visible(model):
    """The prediction at step t reads the state token of t, before a_t is seen."""
    b = batch(1)
    out = model(**b, prompt=prompt(1))
    b["actions"][:, -1] = 0.77
    torch.testing.assert_close(model(**b, prompt=prompt(1))[:, -1], out[:, -1])


def test_left_padding_is_ignored(model):
    b = batch(2)
    short = {k: v[:, 2:] for k, v in b.items()}
    padded = {k: v.clone() for k, v in b.items()}
    padded["mask"][:, :2] = 0
    padded["states"][:, :2] = 123.0  # garbage where masked
    padded["actions"][:, :2] = ACTION_PAD
    out_short = model(**short, prompt=prompt(2))
    out_padded = model(**padded, prompt=prompt(2))
    torch.testing.assert_close(out_padded[:, 2:], out_short, atol=1e-5, rtol=1e-5)
    assert torch.isfinite(out_padded).all()


def test_prompt_matters_and_broadcasts(model):
    b = batch(3)
    single = prompt(1)
    out = model(**b, prompt=single)
    torch.testing.assert_close(out, model(**b, prompt=single.expand(3)))
    assert not torch.allclose(out, model(**b, prompt=prompt(1, seed=9)))
    assert not torch.allclose(out, model(**b, prompt=None))
    with pytest.raises(ValueError, match="cannot prompt a batch"):
        model(**b, prompt=prompt(2))


def test_prompt_shape_checks():
    p = prompt(2)
    with pytest.raises(ValueError, match="prompt.actions"):
        Prompt(p.states, p.actions[:, :2], p.returns_to_go, p.timesteps, p.mask)


def test_masked_mse_counts_real_steps_only():
    pred = torch.zeros(1, 3, 2)
    target = torch.tensor([[[1.0, 1.0], [2.0, 2.0], [100.0, 100.0]]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    assert masked_action_mse(pred, target, mask).item() == pytest.approx((1 + 1 + 4 + 4) / 4)


def test_gradients_reach_prompt_tensors(model):
    p = prompt(1)
    p.states.requires_grad_(True)
    loss = model(**batch(2), prompt=p).pow(2).mean()
    loss.backward()
    assert p.states.grad is not None and p.states.grad.abs().sum() > 0


@pytest.mark.parametrize("kind", ["prompt", "tokens", "empty", "none", "adapters"])
def test_act_last_with_a_cached_prompt_equals_the_forward_pass(kind):
    """`act_last` (prompt keys/values from `prompt_cache`, only the last action) is `forward(...)[:, -1]`, to float32
    rounding, with left-padded windows and prompts, soft-prompt tokens, no prompt and adapters."""
    torch.manual_seed(0)
    model = PromptDT(5, 3, width=32, layers=3, mlp_width=64, context_length=6, prompt_length=4).eval()
    B, K, L = 4, 6, 4
    states, actions, rtg = torch.randn(B, K, 5), torch.rand(B, K, 3) * 2 - 1, torch.randn(B, K, 1)
    timesteps, mask = torch.randint(0, 100, (B, K)), torch.ones(B, K)
    mask[0, :4], mask[1, :1] = 0, 0
    pmask = torch.ones(B, L)
    pmask[2, :2] = 0
    prompt = Prompt(torch.randn(B, L, 5), torch.rand(B, L, 3), torch.randn(B, L, 1), torch.randint(0, 100, (B, L)), pmask)
    adapters = None
    if kind == "tokens":
        prompt = PromptTokens(torch.randn(B, 3 * L, 32), pmask)
    elif kind == "empty":
        prompt = Prompt.empty(5, 3, L, B)
    elif kind == "none":
        prompt = None
    elif kind == "adapters":
        adapters = torch.nn.ModuleList(torch.nn.Sequential(torch.nn.Linear(32, 4), torch.nn.ReLU(), torch.nn.Linear(4, 32))
                                       for _ in model.blocks)  # fmt: skip
    with torch.no_grad():
        full = model(states, actions, rtg, timesteps, mask, prompt=prompt, adapters=adapters)[:, -1]
        cache = None if prompt is None else model.prompt_cache(prompt, adapters=adapters)
        step = model.act_last(states, actions, rtg, timesteps, mask, cache, adapters=adapters)
    torch.testing.assert_close(step, full, rtol=1e-5, atol=1e-6)
