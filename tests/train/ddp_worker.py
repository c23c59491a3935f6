"""Run by `torchrun --nproc_per_node=2` from test_ddp.py: train the tiny model under DDP (gloo), then each rank
writes its trainable tensors so the test can compare ranks. argv: renders captions out_dir."""

import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from ovt.train.checkpoint import trainable_state
from ovt.train.data import build_table
from ovt.train.distributed import destroy, init_from_env
from ovt.train.loop import Trainer
from tests.train.fixtures import build_tiny, tiny_model_cfg, tiny_train_cfg


def main() -> None:
    renders, captions, out = (Path(a) for a in sys.argv[1:4])
    ctx = init_from_env()
    torch.manual_seed(11 + ctx.rank)  # deliberately different inits: DDP must broadcast rank 0's
    model = build_tiny(tiny_model_cfg())
    cfg = tiny_train_cfg(data={"mvcap_batch": 4, "twod_batch": 2}, mining={"mode": "reuse"})
    tr = Trainer(
        model,
        build_table(cfg.data, renders, captions),
        cfg,
        variant="ovt",
        seed=11,
        work_dir=out / f"work{ctx.rank}",
        ctx=ctx,
        key="ddp",
    )
    stats = tr.fit(resume=False)
    state = {k: v.contiguous() for k, v in trainable_state(model).items()}
    state["_hard"] = tr.mined.hard.to(torch.int32)
    state["_centres"] = tr.mined.centres
    save_file(state, out / f"rank{ctx.rank}.safetensors", metadata={"steps": str(stats["steps"])})
    destroy(ctx)


if __name__ == "__main__":
    main()
