"""Prompt Diffuser under DDP (2 CPU processes, gloo): after several steps the diffusers are
identical on both ranks and equal to one process trained on the union of both ranks' batches."""

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset

from promptdiff.data.fewshot import FewShotDataModule
from promptdiff.methods import PromptDiffuser

from test_pretrain import tiny_data

STEPS = 3
SMALL = dict(denoiser={"class_path": "promptdiff.models.MLPDenoiser", "init_args": {"hidden": 32, "blocks": 1, "time_dim": 16}},
             cond_dim=16, diffusion_steps=10, lr=1e-2, cond_dropout=0.2)


def union_batch(batches):
    """Concatenate batches of several ranks along the per-task batch axis (dim 1)."""

    def cat(xs):
        if isinstance(xs[0], dict):
            return {k: cat([x[k] for x in xs]) for k in xs[0]}
        return xs[0] if xs[0].dim() == 1 else torch.cat(xs, dim=1)  # task_ids stay as they are

    return cat(batches)


class _Union(IterableDataset):
    def __init__(self, dm, world):
        self.dm, self.world = dm, world

    def __iter__(self):
        i = 0
        while True:
            yield union_batch([self.dm.draw(np.random.default_rng([self.dm.hparams.seed, r, i]))
                               for r in range(self.world)])  # fmt: skip
            i += 1


class UnionDataModule(FewShotDataModule):
    """One process seeing, at step i, what ranks 0 .. world-1 see together under DDP."""

    def train_dataloader(self):
        return DataLoader(_Union(self, 2), batch_size=None, collate_fn=lambda b: b)


class UnionDiffuser(PromptDiffuser):
    """One process drawing, at step i, the diffusion randomness of ranks 0 .. world-1 together."""

    def _draws_for(self, batch, stage, index):
        T, B = batch["window"]["timesteps"].shape[:2]
        return union_batch([self.diffusion_draws(T, B // 2, (stage, r, index)) for r in range(2)])


class SaveDiffusers(L.Callback):
    def __init__(self, out_dir):
        self.out_dir = str(out_dir)

    def on_train_end(self, trainer, module):
        torch.save(module.diffusers.state_dict(), f"{self.out_dir}/rank{trainer.global_rank}.pt")


def _trainer(**kw):
    return L.Trainer(accelerator="cpu", max_steps=STEPS, limit_val_batches=0, logger=False,
                     enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False, **kw)  # fmt: skip


def test_ddp_matches_single_process_on_the_union(tmp_path):
    root = str(tmp_path / "data")
    tiny_data("point_robot", tmp_path / "data")
    torch.manual_seed(0)
    init = PromptDiffuser("point_robot", root=root, seed=3, **SMALL).diffusers.state_dict()

    ddp_module = PromptDiffuser("point_robot", root=root, seed=3, **SMALL)
    ddp_module.diffusers.load_state_dict(init)
    dm = FewShotDataModule("point_robot", root=root, batch_size=4, seed=3)
    _trainer(devices=2, strategy="ddp_spawn", callbacks=[SaveDiffusers(tmp_path)]).fit(ddp_module, dm)

    single = UnionDiffuser("point_robot", root=root, seed=3, **SMALL)
    single.diffusers.load_state_dict(init)
    _trainer(devices=1).fit(single, UnionDataModule("point_robot", root=root, batch_size=4, seed=3))

    w0, w1 = torch.load(tmp_path / "rank0.pt"), torch.load(tmp_path / "rank1.pt")
    moved = False
    for name, value in single.diffusers.state_dict().items():
        assert torch.equal(w0[name], w1[name]), f"{name} differs between ranks"
        assert torch.allclose(w0[name], value, atol=1e-5, rtol=1e-4), f"{name}: DDP != single process on the union"
        moved |= not torch.allclose(value, init[name])
    assert moved, "training did not change the diffusers"
