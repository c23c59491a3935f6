"""Tiny inputs for the train tests: a render/caption tree in the architecture's layout, the tiny-test model."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from PIL import Image, ImageDraw

from ovt.shards import write_record
from ovt.train.config import TrainParams
from ovt.train.stage import TrainPaths

LABELS = ["chair", "lamp", "table"]
COLOURS = [(220, 40, 40), (40, 200, 60), (50, 80, 230), (230, 200, 40), (200, 60, 200), (40, 200, 200)]
ELEVATIONS = [-30.0, 0.0, 20.0, 45.0]
AZIMUTHS = [0.0, 180.0]


def _view_image(obj: int, view: int) -> Image.Image:
    """A coloured shape whose size and position move with the view: same object, different appearance."""
    im = Image.new("RGBA", (32, 32), (0, 0, 0, 0))
    d = ImageDraw.Draw(im)
    s = 6 + (view % 4) * 3
    x = 4 + (view * 5) % 12
    if obj % 3 == 0:
        d.rectangle([x, x, x + s, x + s], fill=COLOURS[obj] + (255,))
    elif obj % 3 == 1:
        d.ellipse([x, 4, x + s, 4 + s + 6], fill=COLOURS[obj] + (255,))
    else:
        d.polygon([(x, 28), (x + s, 28), (x + s // 2, 28 - s)], fill=COLOURS[obj] + (255,))
    return im


def make_tree(root: Path, n_objects: int = 6, heldout: tuple[int, ...] = (5,)) -> tuple[Path, Path]:
    renders, captions = root / "renders", root / "captions"
    (renders / "shards").mkdir(parents=True)
    (captions / "shards").mkdir(parents=True)
    manifest, caps = [], []
    tar_path = renders / "shards" / "shard-00000.tar"
    with tarfile.open(tar_path, "w") as tf:
        for o in range(n_objects):
            asset = f"{o:02d}" + "ab" * 31
            label = LABELS[o % 3]
            for v, (elev, az) in enumerate((e, a) for e in ELEVATIONS for a in AZIMUTHS):
                key = f"{asset}_{v:03d}"
                buf = io.BytesIO()
                _view_image(o, v).save(buf, format="PNG")
                row = {
                    "key": key,
                    "shard": "shards/shard-00000.tar",
                    "asset_id": asset,
                    "obj_id": o,
                    "view": v,
                    "img_id": len(manifest),
                    "path": f"./views/{asset}/{v:03d}.png",
                    "azimuth": az,
                    "elevation": elev,
                    "distance": 2.8,
                    "fov": 40.0,
                    "canonical": elev == 0.0 and az == 0.0,
                    "split": "heldout" if o in heldout else "train",
                    "label": label,
                    "name": label,
                    "category": "Living room",
                }
                for name, data in ((f"{key}.png", buf.getvalue()), (f"{key}.json", json.dumps(row).encode())):
                    info = tarfile.TarInfo(name)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
                manifest.append(row)
                caps.append({"key": key, "caption": f"a 3D render of a {label}, view {v % 4}", "backend": "template"})
    write_record(renders / "shards" / "shard-00000.tar", {"key": "k0", "n_views": len(manifest)})
    (renders / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in manifest))
    (captions / "shards" / "captions-00000.jsonl").write_text("".join(json.dumps(c) + "\n" for c in caps))
    return renders, captions


def tiny_model_cfg(**over):
    from ovt.model import ModelParams

    base = dict(arch="tiny-test", lora={"placement": "qkv", "last_blocks": 1}, viformer={"ffn": 64})
    base.update(over)
    return ModelParams(**base)


def tiny_train_cfg(**over) -> TrainParams:
    base = dict(
        epochs=2,
        checkpoint_every=2,
        keep_checkpoints=3,
        data={"mvcap_batch": 8, "twod_batch": 4},
        optim={"warmup_steps": 2, "lr": 1e-3},
        mining={"batch_size": 16, "hard_k": 2, "knn": 3},
        tracking={"progress": False, "log_every": 1},
        heldout_viewpoints={"enabled": False},
    )
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(base.get(k), dict):
            base[k] = {**base[k], **v}
        else:
            base[k] = v
    return TrainParams(**base)


def build_tiny(model_cfg):
    from ovt.model import build_base, build_ovt_model

    return build_ovt_model(model_cfg, build_base(model_cfg, None))


def train_paths(tree: tuple[Path, Path], out: Path, **over) -> TrainPaths:
    """The train stage's paths on a test tree: no bootstrapped base, no feature store unless `over` names one."""
    return TrainPaths(
        **{
            "renders_dir": tree[0],
            "captions_dir": tree[1],
            "base_dir": None,
            "features_dir": None,
            "out_dir": out,
            **over,
        }
    )


def stage_layout(root: Path, tree: tuple[Path, Path], params: dict) -> None:
    """`root` laid out as the repository root the train stage runs in: the render and caption trees where
    `TrainPaths()` looks for them, the features stage's store for `params["model"]`, and params.yaml."""
    import yaml

    from ovt.features import FeatureParams, FeaturePaths
    from ovt.features import run as run_features
    from ovt.model import ModelParams

    paths = TrainPaths()
    assert paths.features_dir is not None
    renders, captions = root / paths.renders_dir, root / paths.captions_dir
    renders.parent.mkdir(parents=True, exist_ok=True)
    renders.symlink_to(tree[0])
    captions.symlink_to(tree[1])
    run_features(
        FeatureParams(dtype="float32"),
        model=ModelParams(**params["model"]),
        seed=0,
        progress=False,
        paths=FeaturePaths(renders_dir=renders, out_dir=root / paths.features_dir, stats=None),
    )
    (root / "params.yaml").write_text(yaml.safe_dump(params))


REPO = Path(__file__).resolve().parents[2]
TORCHRUN = Path(sys.executable).parent / "torchrun"


def torchrun_env(**extra: str) -> dict[str, str]:
    """The environment of a test's torchrun: this checkout importable, offline, one thread per rank (2 cores)."""
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **extra}
    env.pop("WORLD_SIZE", None)  # a rank of an outer launcher must not make the child think it is one
    return env


def run_torchrun(module: str, *args: object, nproc: int = 2, timeout: int = 240) -> None:
    """`torchrun --standalone --nproc_per_node=<nproc> -m <module> <args>` from the repository root (gloo on the
    CPU); fails the test with the ranks' stderr tail when it exits non-zero."""
    cmd = [str(TORCHRUN), "--standalone", f"--nproc_per_node={nproc}", "-m", module, *map(str, args)]
    proc = subprocess.run(cmd, cwd=REPO, env=torchrun_env(), capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, proc.stderr[-3000:]
