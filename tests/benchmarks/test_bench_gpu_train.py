"""The GPU training benchmark's tiny mode: the same code path on CPU, writing a results file that says what it is."""

from __future__ import annotations

import json
import math

import pytest

from tests.benchmarks.scripts import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_gpu_train")


def test_tiny_run_writes_sane_results(bench, tmp_path):
    out = tmp_path / "gpu_train.json"
    bench.main(
        [
            "--tiny",
            "--cpu",
            "--out",
            str(out),
            "--batch",
            "8",
            "--images",
            "32",
            "--views",
            "4",
            "--per-shard",
            "12",
            "--reps",
            "2",
            "--warmup",
            "1",
            "--workers",
            "2",
        ]
    )
    res = json.loads(out.read_text())
    assert res["device"] == "cpu" and res["tiny"] is True and res["gpu_result"] is False
    assert "not a GPU measurement" in res["note"]
    assert res["targets"]["met"] is None  # a tiny CPU run never claims the GPU targets
    cfg = res["config"]
    assert cfg["arch"] == "tiny-test" and cfg["batch"] == 8 and cfg["lora"]["placement"] == "qkv"
    assert cfg["lora"]["r"] == 8 and cfg["lora"]["last_blocks"] is None and cfg["viformer"]["enabled"]
    assert cfg["trainable_params"] > 0 and cfg["compile"] == "off"
    for name in ("contrastive", "ovt"):
        step = res["steps"][name]
        assert step["images_per_s"] > 0 and step["step_s_median"] > 0
        assert step["flops_per_step"] > 0  # counted, attention included
        assert step["mfu"] is None  # no peak is claimed for a CPU
    ratio = res["ratio_ovt_over_contrastive_time"]
    assert math.isfinite(ratio) and ratio > 0
    assert res["caption_bank"]["captions"] == 32  # one caption per view, each embedded once
    assert res["max_step"]["hard_views"] > 0
    assert res["pipeline"]["ovt_images_per_s_after_first_batch"] > 0
    assert res["host_peak_rss_bytes"] > 0


def test_counted_flops_match_the_transformer_arithmetic(bench):
    """One linear layer's forward+backward without weight gradients: 2·B·in·out (fwd) + 2·B·in·out (input grad)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    lin = torch.nn.Linear(64, 32)
    lin.requires_grad_(False)
    x = torch.randn(8, 64, requires_grad=True)
    with FlopCounterMode(display=False, custom_mapping=bench._sdpa_cpu_flops()) as fc:
        lin(x).sum().backward()
    assert fc.get_total_flops() == 2 * (2 * 8 * 64 * 32)
    q = torch.randn(2, 4, 10, 8, requires_grad=True)
    with FlopCounterMode(display=False, custom_mapping=bench._sdpa_cpu_flops()) as fc:
        torch.nn.functional.scaled_dot_product_attention(q, q, q)
    assert fc.get_total_flops() == 2 * (2 * 2 * 4 * 10 * 10 * 8)  # QK^T and AV, CPU kernel counted too


def test_peak_table_is_keyed_by_device_name(bench):
    assert bench.peak_flops("NVIDIA H200") == 989e12
    assert bench.peak_flops("NVIDIA H100 80GB HBM3") == 989e12
    assert bench.peak_flops("NVIDIA H100 PCIe") == 756e12
    assert bench.peak_flops("some unknown accelerator") is None
