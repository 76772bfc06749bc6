"""Two CPU processes (gloo, ddp_spawn): ranks draw different batches, rollouts are sharded and
their reduced metrics equal a single-process evaluation of the same weights."""

import json

import lightning as L
import numpy as np
import torch

from promptdiff.callbacks import RolloutCallback
from promptdiff.data.datamodule import PromptDTDataModule
from promptdiff.methods import PromptDTPretrain
from promptdiff.rollout import evaluate

from test_pretrain import tiny_data


class Probe(L.Callback):
    """Each rank writes what it saw: its first batch and the rollout summary it logged."""

    def __init__(self, out_dir):
        self.out_dir = str(out_dir)

    def on_train_batch_start(self, trainer, module, batch, batch_idx):
        if batch_idx == 0:
            seg = batch["segment"]["states"].cpu().numpy()
            np.save(f"{self.out_dir}/batch_rank{trainer.global_rank}.npy", seg)

    def on_train_end(self, trainer, module):
        rollout = next(c for c in trainer.callbacks if isinstance(c, RolloutCallback))
        with open(f"{self.out_dir}/rollout_rank{trainer.global_rank}.json", "w") as f:
            json.dump(rollout.last, f)
        if trainer.global_rank == 0:
            torch.save(module.state_dict(), f"{self.out_dir}/weights.pt")


def test_ddp_two_ranks(tmp_path):
    train = tiny_data("point_robot", tmp_path / "data")
    module = PromptDTPretrain("point_robot", width=32, mlp_width=64, layers=1, warmup_steps=2)
    dm = PromptDTDataModule("point_robot", root=str(tmp_path / "data"), batch_size_per_task=2, train_tasks=train,
                            val_batches=1)  # fmt: skip
    rollout = RolloutCallback(every_n_val_epochs=1, episodes=3, card_root=str(tmp_path / "data"), final_table=True)
    trainer = L.Trainer(accelerator="cpu", devices=2, strategy="ddp_spawn", max_steps=2, val_check_interval=2,
                        limit_val_batches=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[rollout, Probe(tmp_path)])  # fmt: skip
    trainer.fit(module, dm)

    b0, b1 = np.load(tmp_path / "batch_rank0.npy"), np.load(tmp_path / "batch_rank1.npy")
    assert b0.shape == b1.shape and not np.allclose(b0, b1), "ranks drew the same batch"
    r0 = json.loads((tmp_path / "rollout_rank0.json").read_text())
    r1 = json.loads((tmp_path / "rollout_rank1.json").read_text())
    assert r0 == r1, "ranks logged different rollout metrics"

    # the same weights evaluated in one process over all 3 episodes give the reduced numbers
    single = PromptDTPretrain("point_robot", width=32, mlp_width=64, layers=1)
    single.load_state_dict(torch.load(tmp_path / "weights.pt"))
    dm.setup()
    tasks = list(single.family.test_tasks)
    result = evaluate(single.rollout_policy(), "point_robot", tasks, dm.tail_prompts(tasks, 0), 3, seed=0,
                      card_root=str(tmp_path / "data"))  # fmt: skip
    for t in tasks:
        assert abs(r0["tasks"][str(t)]["return_mean"] - result["tasks"][t]["return_mean"]) < 1e-4
