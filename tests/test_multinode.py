"""PLM pre-training over two "nodes": two `promptdiff fit` processes on this machine, each told by its
environment which node it is (Lightning's own variables, or the ones SLURM's srun sets), join one DDP
group of world size 2 and train one model together."""

import json
import os
import socket
import subprocess
import sys

import pytest

from promptdiff.safe_io import load_checkpoint

from test_pretrain import ROOT, shrink_args, tiny_data


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _node_env(scheme: str, node: int, port: int) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SLURM_", "NODE_RANK", "LOCAL_RANK", "WORLD_SIZE"))}
    env.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    if scheme == "lightning":  # what `--trainer.num_nodes` expects on each node without a scheduler
        env.update(NODE_RANK=str(node))
    else:  # what `srun` sets for task `node` of a 2-node, 1-task-per-node job
        env.update(SLURM_NTASKS="2", SLURM_NTASKS_PER_NODE="1", SLURM_NNODES="2", SLURM_PROCID=str(node),
                   SLURM_LOCALID="0", SLURM_NODEID=str(node), SLURM_JOB_ID="4242", SLURM_JOB_NAME="pretrain",
                   SLURM_NODELIST="localhost")  # fmt: skip
    return env


@pytest.mark.parametrize("scheme", ["lightning", "slurm"])
def test_two_node_pretraining_forms_one_group(scheme, tmp_path):
    train = tiny_data("point_robot", tmp_path / "data")
    args = shrink_args(tmp_path, train, steps=4)
    final = tmp_path / "final.json"
    callbacks = json.loads(args[args.index("--trainer.callbacks") + 1])
    callbacks[1]["init_args"].update(final_table=True, final_json=str(final), episodes=2)
    args[args.index("--trainer.callbacks") + 1] = json.dumps(callbacks)
    command = [sys.executable, "-m", "promptdiff.cli.main", "fit", "--config",
               str(ROOT / "conf" / "pretrain" / "point_robot.yaml"), *args, "--trainer.num_nodes", "2",
               "--trainer.devices", "1", "--trainer.strategy", "ddp"]  # fmt: skip
    port = _free_port()
    nodes = [subprocess.Popen(command, env=_node_env(scheme, n, port), cwd=tmp_path, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True) for n in range(2)]  # fmt: skip
    outputs = []
    for proc in nodes:
        try:
            outputs.append(proc.communicate(timeout=600)[0])
        except subprocess.TimeoutExpired:
            for p in nodes:
                p.kill()
            raise
    for n, (proc, out) in enumerate(zip(nodes, outputs)):
        assert proc.returncode == 0, f"node {n}:\n{out[-3000:]}"
    assert "GLOBAL_RANK: 0, MEMBER: 1/2" in outputs[0] and "GLOBAL_RANK: 1, MEMBER: 2/2" in outputs[1]
    summary = json.loads(final.read_text())  # the final rollout: episodes shared by the two ranks, reduced
    assert summary["world_size"] == 2 and summary["episodes"] == 2
    assert load_checkpoint(tmp_path / "ckpt" / "last.ckpt")["global_step"] == 4
