"""Run by `torchrun --nproc_per_node=2` from test_ddp.py: the train stage's distributed entry (`run_distributed`)
trains the tiny model under DDP (gloo), then each rank writes its trainable tensors and mined hard views so the
test can compare ranks. argv: renders captions out_dir."""

import os
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from ovt.train import stage
from ovt.train.checkpoint import trainable_state
from tests.train.fixtures import build_tiny, tiny_model_cfg, tiny_train_cfg, train_paths


def main() -> None:
    renders, captions, out = (Path(a) for a in sys.argv[1:4])
    rank = int(os.environ["RANK"])
    built, trainers = [], []

    def build_model():
        torch.manual_seed(11 + rank)  # deliberately different inits: DDP must broadcast rank 0's
        built.append(build_tiny(tiny_model_cfg()))
        return built[-1]

    class RecordingTrainer(stage.Trainer):  # keeps each trainer so its mined set can be compared across ranks
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            trainers.append(self)

    stage.Trainer = RecordingTrainer
    cfg = tiny_train_cfg(variants=["ovt"], data={"mvcap_batch": 4, "twod_batch": 2}, mining={"mode": "reuse"})
    stats = stage.run_distributed(
        cfg, seed=11, paths=train_paths((renders, captions), out / "models"), build_model=build_model, resume=False
    )
    (model,), (trainer,) = built, trainers
    assert trainer.ctx.world == 2 and trainer.ctx.rank == rank
    state = {k: v.contiguous() for k, v in trainable_state(model).items()}
    assert trainer.mined is not None
    state["_hard"] = trainer.mined.hard.to(torch.int32)
    state["_centres"] = trainer.mined.centres
    save_file(state, out / f"rank{rank}.safetensors", metadata={"steps": str(stats["ovt"]["steps"])})


if __name__ == "__main__":
    main()
