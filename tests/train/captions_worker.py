"""Run by `torchrun --nproc_per_node=2` from test_captions.py: each rank builds the trainer's caption bank of the
tiny tree (gloo), records the captions its text tower encoded, and writes every row's embedding as it reads it.
argv: renders captions out_dir."""

import json
import sys
from pathlib import Path

import torch
from safetensors.torch import save_file

from ovt.train.captions import CaptionSource, TextTable
from ovt.train.data import build_table
from ovt.train.distributed import destroy, init_from_env
from tests.train.fixtures import build_tiny, tiny_model_cfg, tiny_train_cfg


def main() -> None:
    renders, captions, out = (Path(a) for a in sys.argv[1:4])
    ctx = init_from_env()
    try:
        torch.manual_seed(0)  # the same frozen text tower on both ranks
        model = build_tiny(tiny_model_cfg())
        encoded: list[str] = []
        real = model.encode_text
        model.encode_text = lambda texts, **kw: encoded.extend(texts) or real(texts, **kw)
        table = build_table(tiny_train_cfg().data, renders, captions)
        text = TextTable(model, table, CaptionSource(out / "bank", "k", table.rows.sorted_texts), ctx)
        emb = text[torch.arange(len(table.pairs))]
        (out / f"rank{ctx.rank}.json").write_text(json.dumps(encoded))
        save_file({"emb": emb.contiguous()}, out / f"rank{ctx.rank}.safetensors")
    finally:
        destroy(ctx)


if __name__ == "__main__":
    main()
