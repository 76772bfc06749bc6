"""Our PLM computes what the reference Prompt-DT (GPT-2 from `transformers`) computes.

`benchmarks/plm_step_vs_reference.py` times the two against each other; these tests check that
the comparison is between equal models: with the shipped ant_dir PLM's weights copied into the
reference, both give the same actions, the same masked action loss and the same gradients on a
batch with left padding in prompts and segments. Our forward pass leaves out work no prediction
reads (the last action token; the last block's other tokens); the reference computes everything,
so these tests also check that nothing read was left out.
"""

import sys
from pathlib import Path

import pytest
import torch

from promptdiff.methods import PromptDTPretrain
from promptdiff.prompt import Prompt

pytest.importorskip("transformers")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
from reference_prompt_dt import ReferencePromptDT, reference_loss  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models():
    plm = PromptDTPretrain.load_policy(str(ROOT / "datasets/ant_dir/plm.ckpt"))
    m = plm.model
    ref = ReferencePromptDT(m.obs_dim, m.act_dim).copy_weights_from(m).eval()
    return plm, ref


def padded_batch(m, B=12, seed=0):
    """Segments and prompts as the sampler makes them, near episode starts: left padding of 0 to K - 1 steps."""
    g = torch.Generator().manual_seed(seed)
    K, L = m.context_length, m.prompt_length

    def part(n):
        pad = torch.randint(0, n, (B,), generator=g)
        mask = (torch.arange(n)[None] >= pad[:, None]).float()
        t0 = torch.randint(0, 180, (B, 1), generator=g)
        return dict(states=torch.randn(B, n, m.obs_dim, generator=g), actions=torch.rand(B, n, m.act_dim, generator=g) * 2 - 1,
                    returns_to_go=torch.rand(B, n, 1, generator=g) * 3, timesteps=(t0 + torch.arange(n)) * mask.long(),
                    mask=mask)  # fmt: skip

    p = part(L)
    return {"segment": part(K), "prompt": Prompt(p["states"], p["actions"], p["returns_to_go"], p["timesteps"], p["mask"])}


def test_same_actions_and_loss_as_the_reference(models):
    plm, ref = models
    batch = padded_batch(plm.model)
    seg = batch["segment"]
    assert seg["mask"].min() == 0 and batch["prompt"].mask.min() == 0  # padding is exercised
    with torch.no_grad():
        ours = plm.model(seg["states"], seg["actions"], seg["returns_to_go"], seg["timesteps"], seg["mask"],
                         prompt=batch["prompt"])  # fmt: skip
        theirs = ref(seg["states"], seg["actions"], seg["returns_to_go"], seg["timesteps"], seg["mask"], batch["prompt"])[0]
        real = seg["mask"] > 0
        torch.testing.assert_close(ours[real], theirs[real], rtol=1e-5, atol=1e-6)
        loss, ref_loss = plm.model_step(batch), reference_loss(ref, batch)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-6, atol=0)
    assert loss > 0


def test_same_gradients_as_the_reference(models):
    plm, ref = models
    batch = padded_batch(plm.model, seed=1)
    plm.zero_grad(), ref.zero_grad()
    plm.model_step(batch).backward()
    reference_loss(ref, batch).backward()
    m = plm.model
    pairs = {"block 0 qkv": (m.blocks[0].attn.qkv.weight.grad, ref.transformer.h[0].attn.c_attn.weight.grad.T),
             "last block mlp": (m.blocks[-1].mlp[0].weight.grad, ref.transformer.h[-1].mlp.c_fc.weight.grad.T),
             "last block qkv": (m.blocks[-1].attn.qkv.weight.grad, ref.transformer.h[-1].attn.c_attn.weight.grad.T),
             "prompt state embedding": (m.prompt_embed.state.weight.grad, ref.prompt_embed_state.weight.grad),
             "action head": (m.action_head[0].weight.grad, ref.predict_action[0].weight.grad)}  # fmt: skip
    for name, (ours, theirs) in pairs.items():
        assert theirs.abs().max() > 0, name
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-7, msg=lambda s, n=name: f"{n}: {s}")

