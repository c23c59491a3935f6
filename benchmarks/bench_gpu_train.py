"""GPU training benchmark of the paper configuration: contrastive step vs OVT step, fed by webdataset shards.

    python benchmarks/bench_gpu_train.py                 # CUDA: ViT-B-32, LoRA r=8 on qkv + VIFormer, batch 512
    python benchmarks/bench_gpu_train.py --tiny          # any machine (automatic without CUDA): tiny model, seconds

What it does, in order: writes synthetic MVCap-style shards (coloured shapes, one caption per view, `views`
views per object) through the shard module; builds the OVT model (random init: throughput does not depend on the
weights); embeds every distinct caption once (CaptionBank, frozen text tower); runs the max step (one streaming
no-grad pass, then the project's mining code); times the min step two ways on the same device-resident batches:
  contrastive = L_ITC only,   ovt = L_ITC + lambda * L_VC on the batch's hard views (its mined centres);
then one loader-fed epoch of OVT steps (decode/preprocess in worker processes, pinned memory) for the end-to-end
rate. FLOPs per step are counted with torch's FlopCounterMode on one eager forward+backward (not estimated), and
MFU = counted FLOPs / step time / the device's dense bf16 peak (table below; null for unknown devices and CPUs).

Writes benchmarks/results/gpu_train.json. A run without CUDA records `"device": "cpu", "tiny": true,
"gpu_result": false`: it checks the code path, it is not a GPU measurement.
"""

from __future__ import annotations

import argparse
import io
import math
import os
import resource
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch
import torch.nn.functional as F
from PIL import Image, ImageDraw

from benchmarks.common import write_result
from ovt import shards
from ovt.model import ModelParams, build_base, build_ovt_model
from ovt.train.captions import CaptionBank
from ovt.train.loader import LoaderSpec, make_loader, shard_tars
from ovt.train.losses import itc_loss, vc_loss
from ovt.train.mining import mine_from_embeddings

RESULTS = Path(__file__).parent / "results" / "gpu_train.json"

# Dense (no sparsity) bf16 tensor-core peaks from the vendors' datasheets, FLOP/s. Matched by substring of
# torch.cuda.get_device_name(), most specific first.
PEAK_BF16 = [
    ("H100 PCIe", 756e12),
    ("H100 NVL", 835e12),
    ("GH200", 989e12),
    ("H200", 989e12),
    ("H100", 989e12),
    ("B200", 2250e12),
    ("A100", 312e12),
    ("L40S", 362e12),
    ("L4", 121e12),
    ("A10G", 70e12),
    ("A10", 125e12),
]

TARGET_OVT_IMAGES_PER_S = 5000
TARGET_RATIO = 1.25


def peak_flops(device_name: str) -> float | None:
    return next((p for k, p in PEAK_BF16 if k in device_name), None)


# ---- synthetic shards -----------------------------------------------------------------------------------------------
def _image(i: int, obj: int, view: int, size: int, fmt: str) -> bytes:
    """A white background with one coloured shape per object that moves and grows with the view (a render's look)."""
    g = torch.Generator().manual_seed(obj)
    colour = tuple(int(c) for c in torch.randint(20, 235, (3,), generator=g))
    im = Image.new("RGB", (size, size), (255, 255, 255))
    s = size // 4 + (view * size // 11) % (size // 2)
    x = (view * size // 7) % (size - s)
    draw = ImageDraw.Draw(im)
    (draw.ellipse if obj % 2 else draw.rectangle)([x, size // 8, x + s, size // 8 + s], fill=colour)
    buf = io.BytesIO()
    im.save(buf, format=fmt)
    return buf.getvalue()


def caption_of(obj: int, view: int) -> str:
    return f"a 3D render of object {obj} of class {obj % 50}, seen from viewpoint {view}"


def _write_shard(args) -> str:
    folder, index, start, stop, views, size = args
    samples = []
    for i in range(start, stop):
        obj, view = divmod(i, views)
        samples.append(
            {
                "__key__": f"o{obj:07d}_{view:03d}",
                "png": _image(i, obj, view, size, "PNG"),
                "json": {
                    "path": f"./views/o{obj:07d}/{view:03d}.png",
                    "caption": caption_of(obj, view),
                    "obj_id": obj,
                    "img_id": i,
                    "view": view,
                },
            }
        )
    tar = Path(folder) / f"{shards.shard_name(index)}.tar"
    with open(tar, "wb") as fh:
        shards.write_samples(fh, samples)
    shards.write_record(tar, {"key": f"synthetic-{index}-{start}-{stop}-{views}-{size}", "n_views": stop - start})
    return str(tar)


def write_synthetic_shards(
    folder: Path, images: int, views: int, size: int, per_shard: int, procs: int = 1
) -> list[Path]:
    """`images` samples in MVCap record layout (path, caption, obj_id, img_id + view), `per_shard` per tar."""
    folder.mkdir(parents=True, exist_ok=True)
    jobs = [
        (str(folder), k, s, min(s + per_shard, images), views, size) for k, s in enumerate(range(0, images, per_shard))
    ]
    if procs > 1:
        with ProcessPoolExecutor(procs) as ex:
            list(ex.map(_write_shard, jobs))
    else:
        for j in jobs:
            _write_shard(j)
    return shard_tars(folder)


# ---- model and steps ------------------------------------------------------------------------------------------------
def model_params(tiny: bool) -> ModelParams:
    if tiny:
        return ModelParams(
            arch="tiny-test", lora={"placement": "qkv", "last_blocks": None, "r": 8}, viformer={"ffn": 64}
        )
    return ModelParams(arch="ViT-B-32", lora={"placement": "qkv", "last_blocks": None, "r": 8})


def _sdpa_cpu_flops():
    """FlopCounterMode has formulas for the CUDA attention kernels only; CPU's flash kernel gets the same ones."""
    from torch.utils import flop_counter as fc

    aten = torch.ops.aten

    def fwd(q, k, v, *_, out_shape=None, **__):
        return fc.sdpa_flop_count(q, k, v)

    def bwd(g, q, k, v, *_, out_shape=None, **__):
        return fc.sdpa_backward_flop_count(g, q, k, v)

    return {
        aten._scaled_dot_product_flash_attention_for_cpu: fwd,
        aten._scaled_dot_product_flash_attention_for_cpu_backward: bwd,
    }


class Bench:
    def __init__(self, model, device: torch.device, lam: float = 1.0, margin: float = 0.3):
        self.model, self.device, self.lam, self.margin = model, device, lam, margin
        self.encode = model.encode_image
        self.params = model.trainable_parameters()
        self.opt = torch.optim.AdamW(self.params, lr=5e-5, betas=(0.9, 0.98), eps=1e-6, weight_decay=0.05)

    def autocast(self):
        import contextlib

        return torch.autocast("cuda", dtype=torch.bfloat16) if self.device.type == "cuda" else contextlib.nullcontext()

    def loss(self, images, text, hard, centres, vc: bool) -> torch.Tensor:
        with self.autocast():
            z = self.encode(images)
        z = F.normalize(z.float(), dim=-1)
        loss = itc_loss(z, text, self.model.logit_scale)
        if vc:
            loss = loss + self.lam * vc_loss(z.index_select(0, hard), centres, self.margin)
        return loss

    def step(self, batch: tuple, vc: bool) -> None:
        loss = self.loss(*batch, vc=vc)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        self.opt.step()

    def count_flops(self, batch: tuple, vc: bool) -> int:
        """FLOPs of one eager forward + backward (the optimiser's elementwise update is not counted)."""
        from torch.utils.flop_counter import FlopCounterMode

        encode, self.encode = self.encode, self.model.encode_image
        try:
            with FlopCounterMode(display=False, custom_mapping=_sdpa_cpu_flops()) as fc:
                self.loss(*batch, vc=vc).backward()
        finally:
            self.encode = encode
            self.opt.zero_grad(set_to_none=True)
        return int(fc.get_total_flops())

    def sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def device_batches(loader, n: int, device, index: dict, mined, n_take: int) -> list[tuple]:
    """The first `n` loader batches moved to the device with their hard-view masks and centres."""
    out = []
    for b in loader:
        out.append(to_device(b, device, index, mined))
        if len(out) == n:
            break
    return out[:n_take]


def to_device(b, device, index: dict, mined) -> tuple:
    """(images, caption embeddings, hard-view positions, their centres) on the device. Hard positions are
    resolved on the host, so the step never waits on a device-side boolean mask (a sync per step)."""
    rows = torch.tensor([index[k] for k in b.keys])
    hard = mined.hard[rows].nonzero().squeeze(1)
    objs = torch.tensor([int(o) for o in b.objects])[hard]
    nb = device.type == "cuda"
    return (
        b.images.to(device, non_blocking=nb),
        F.normalize(b.text_emb, dim=-1).to(device, non_blocking=nb),
        hard.to(device, non_blocking=nb),
        mined.centres[objs].to(device, non_blocking=nb),
    )


def time_steps(bench: Bench, batches: list[tuple], vc: bool, reps: int) -> list[float]:
    out = []
    for r in range(reps):
        bench.sync()
        t0 = time.perf_counter()
        bench.step(batches[r % len(batches)], vc)
        bench.sync()
        out.append(time.perf_counter() - t0)
    return out


def host_peak_rss() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux reports KiB


# ---- the run --------------------------------------------------------------------------------------------------------
def run(args) -> dict:
    cuda = torch.cuda.is_available() and not args.cpu
    tiny = args.tiny or not cuda
    device = torch.device("cuda") if cuda else torch.device("cpu")
    batch = args.batch or (16 if tiny else 512)
    images = args.images or (4 * batch if tiny else 16 * batch)
    reps, warmup = args.reps or (3 if tiny else 10), args.warmup if args.warmup is not None else (1 if tiny else 3)
    n_dev = min(args.device_batches, math.ceil(images / batch))
    workers = args.workers if args.workers is not None else (1 if tiny else min(16, os.cpu_count() or 1))
    compile_mode = args.compile if args.compile != "auto" else ("on" if cuda else "off")
    # tiny runs are code-path checks on shared CPUs, where torch's thread pool spinning against other processes
    # makes a 10 ms step take ~1 s: one intra-op thread unless told otherwise
    threads = args.threads or (1 if tiny else torch.get_num_threads())
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    mcfg = model_params(tiny)
    model = build_ovt_model(mcfg, build_base(mcfg, None)).to(device)
    model.train(False)  # official: eval mode (VIFormer dropout off); LoRA still trains
    size = int(model.base_info.model.visual.image_size[0])
    res: dict = {
        "device": torch.cuda.get_device_name(device) if cuda else "cpu",
        "tiny": tiny,
        "gpu_result": bool(cuda and not tiny),
    }
    if not res["gpu_result"]:
        res["note"] = (
            "code-path check on a tiny model (no GPU): these numbers are not a GPU measurement"
            if not cuda
            else "tiny model on a GPU: a code-path check, not the paper configuration"
        )
    with tempfile.TemporaryDirectory(prefix="bench-gpu-train-") as tmp:
        t0 = time.perf_counter()
        tars = write_synthetic_shards(
            Path(tmp) / "shards", images, args.views, size, args.per_shard, procs=max(1, workers)
        )
        res["shards_write_s"] = round(time.perf_counter() - t0, 2)
        texts = [caption_of(*divmod(i, args.views)) for i in range(images)]
        t0 = time.perf_counter()
        bank = CaptionBank.build(
            Path(tmp) / "captions",
            lambda: texts,
            text_encoder(model),
            encoder_key=mcfg.arch,
            batch_size=256 if cuda else 64,
        )
        res["caption_bank"] = {"captions": bank.count, "s": round(time.perf_counter() - t0, 2)}
        spec = LoaderSpec(batch_size=batch, num_workers=workers, shuffle_buffer=min(1000, batch * 2))
        loader = make_loader(tars, model.preprocess, spec, seed=0, bank=bank)
        index = {f"o{i // args.views:07d}_{i % args.views:03d}": i for i in range(images)}

        # max step: one streaming no-grad pass (loader order), regrouped by object on the host, then mined
        t0 = time.perf_counter()
        emb = torch.zeros(images, bench_dim(model))
        with torch.no_grad():
            bench = Bench(model, device)
            for b in loader:
                with bench.autocast():
                    z = model.encode_image(b.images.to(device, non_blocking=cuda)).float().cpu()
                emb[torch.tensor([index[k] for k in b.keys])] = z
        n_obj = math.ceil(images / args.views)
        rows_of = [torch.arange(o * args.views, min((o + 1) * args.views, images)) for o in range(n_obj)]
        mined = mine_from_embeddings(
            ((o, r, emb[r]) for o, r in enumerate(rows_of)),
            n_obj,
            images,
            emb.shape[1],
            knn=5,
            hard_k=5,
            weight="inv_cos",
            renormalise=False,
        )
        t_max = time.perf_counter() - t0
        res["max_step"] = {
            "s": round(t_max, 3),
            "images_per_s": round(images / t_max, 1),
            "hard_views": int(mined.hard.sum()),
            "hard_fraction": round(float(mined.hard.float().mean()), 3),
        }

        loader.dataset.set_epoch(1)
        batches = device_batches(loader, n_dev, device, index, mined, n_dev)
        flops = {k: bench.count_flops(batches[0], vc) for k, vc in (("contrastive", False), ("ovt", True))}
        compile_info, fast_encode = "off", model.encode_image
        if compile_mode == "on":
            try:
                bench.encode = fast_encode = torch.compile(model.encode_image)
                time_steps(bench, batches, True, 2)  # compiles (both loss variants share the compiled encoder)
                compile_info = "on"
            except Exception as err:  # noqa: BLE001 - recorded, and the eager path is measured instead
                bench.encode = fast_encode = model.encode_image
                compile_info = f"failed ({type(err).__name__}: {str(err)[:200]})"
        steps: dict = {}
        peak = peak_flops(res["device"]) if cuda else None
        kinds = (("contrastive", False), ("ovt", True))
        for _, vc in kinds:
            time_steps(bench, batches, vc, warmup)
        times: dict[str, list[float]] = {name: [] for name, _ in kinds}
        peaks: dict[str, int] = {name: 0 for name, _ in kinds}
        for r in range(reps):  # interleaved, so clock drift and neighbours' load hit both step types alike
            for name, vc in kinds:
                if cuda:
                    torch.cuda.reset_peak_memory_stats(device)
                times[name] += time_steps(bench, [batches[r % len(batches)]], vc, 1)
                if cuda:
                    peaks[name] = max(peaks[name], int(torch.cuda.max_memory_allocated(device)))
        for name, _ in kinds:
            med = statistics.median(times[name])
            steps[name] = {
                "step_s_median": round(med, 5),
                "step_s_min": round(min(times[name]), 5),
                "images_per_s": round(batch / med, 1),
                "flops_per_step": flops[name],
                "achieved_tflops_per_s": round(flops[name] / med / 1e12, 3),
                "mfu": round(flops[name] / med / peak, 4) if peak else None,
                "peak_memory_bytes": peaks[name] if cuda else None,
            }
        if compile_info == "on":  # does compiling help? the eager OVT step on the same batches
            bench.encode = model.encode_image
            time_steps(bench, batches, True, warmup)
            eager = statistics.median(time_steps(bench, batches, True, reps))
            res["compile_speedup_ovt"] = round(eager / steps["ovt"]["step_s_median"], 3)
            steps["ovt_eager"] = {"step_s_median": round(eager, 5), "images_per_s": round(batch / eager, 1)}

        # end to end: one loader-fed epoch of OVT steps (the first batch, i.e. worker start-up, timed apart)
        bench.encode = fast_encode
        loader.dataset.set_epoch(2)
        t_start = time.perf_counter()
        n_seen, t_first = 0, None
        for b in loader:
            bench.step(to_device(b, device, index, mined), True)
            if t_first is None:
                bench.sync()
                t_first = time.perf_counter()
            else:
                n_seen += len(b.keys)
        bench.sync()
        t_end = time.perf_counter()
    res["config"] = {
        "arch": mcfg.arch,
        "image_size": size,
        "batch": batch,
        "lora": mcfg.lora.model_dump(mode="json"),
        "viformer": mcfg.viformer.model_dump(mode="json"),
        "trainable_params": model.count_trainable(),
        "precision": "bf16 autocast" if cuda else "fp32 (no autocast on CPU)",
        "compile": compile_info,
        "loader_workers": workers,
        "torch_threads": threads,
        "images": images,
        "views_per_object": args.views,
        "lambda": 1.0,
        "margin": 0.3,
        "device_batches": len(batches),
        "warmup": warmup,
        "reps": reps,
        "peak_bf16_flops_per_s": peak,
        # what FlopCounterMode counts: matmul, convolution and attention kernels of one forward + backward (the
        # MFU convention); L_VC's cosine terms are elementwise, so both step types count the same FLOPs
        "flops_counted": "torch.utils.flop_counter.FlopCounterMode: mm/conv/attention, forward + backward",
    }
    res["steps"] = steps
    res["ratio_ovt_over_contrastive_time"] = round(
        steps["ovt"]["step_s_median"] / steps["contrastive"]["step_s_median"], 4
    )
    res["pipeline"] = {
        "epoch_s": round(t_end - t_start, 3),
        "first_batch_s": round(t_first - t_start, 3),
        "ovt_images_per_s_after_first_batch": round(n_seen / (t_end - t_first), 1)
        if n_seen and t_end > t_first
        else None,
    }
    res["host_peak_rss_bytes"] = host_peak_rss()
    res["targets"] = {
        "ovt_images_per_s_min": TARGET_OVT_IMAGES_PER_S,
        "ratio_max": TARGET_RATIO,
        "met": (
            steps["ovt"]["images_per_s"] >= TARGET_OVT_IMAGES_PER_S
            and res["ratio_ovt_over_contrastive_time"] <= TARGET_RATIO
        )
        if res["gpu_result"]
        else None,
    }
    return res


def text_encoder(model):
    """The frozen text tower without OVTModel.encode_text's per-string host cache (O(captions) memory at scale:
    the bank is the cache)."""

    @torch.no_grad()
    def encode(texts: list[str]) -> torch.Tensor:
        return F.normalize(model.clip.encode_text(model.tokenizer(texts).to(model.device)).float(), dim=-1)

    return encode


def bench_dim(model) -> int:
    return int(model.base_info.embed_dim)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--tiny", action="store_true", help="tiny model (automatic without CUDA)")
    ap.add_argument("--cpu", action="store_true", help="ignore CUDA even when present (implies --tiny)")
    ap.add_argument("--batch", type=int, default=None, help="default 512 (tiny: 16)")
    ap.add_argument("--images", type=int, default=None, help="synthetic images (default 16 batches; tiny 4)")
    ap.add_argument("--views", type=int, default=12, help="views per object")
    ap.add_argument("--per-shard", type=int, default=512)
    ap.add_argument("--workers", type=int, default=None, help="loader workers (default min(16, cpus); tiny 1)")
    ap.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's; tiny 1)")
    ap.add_argument("--compile", choices=["auto", "on", "off"], default="auto", help="auto: on with CUDA")
    ap.add_argument("--device-batches", type=int, default=4, help="device-resident batches the steps cycle over")
    ap.add_argument("--warmup", type=int, default=None, help="untimed steps per step type (default 3; tiny 1)")
    ap.add_argument("--reps", type=int, default=None, help="timed steps per step type (default 10; tiny 3)")
    ap.add_argument("--out", type=Path, default=RESULTS)
    args = ap.parse_args(argv)
    load_before = os.getloadavg()[0]
    res = write_result(args.out, run(args), load_before=load_before, echo=False)
    kind = "GPU result" if res["gpu_result"] else "NOT a GPU result (tiny code-path check)"
    print(
        f"[{kind}] device={res['device']} "
        + " ".join(f"{k}={v['images_per_s']} img/s" for k, v in res["steps"].items())
        + f" ratio={res['ratio_ovt_over_contrastive_time']} -> {args.out}"
    )
    return res


if __name__ == "__main__":
    main()
