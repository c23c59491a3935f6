"""The Trainer memory benchmark: its synthetic set is the released MVCap layout, and its quick mode runs the real train
stage at two sizes and writes real samples."""

from __future__ import annotations

import json

import pytest

from tests.benchmarks.scripts import load_script


@pytest.fixture(scope="module")
def bench():
    return load_script("bench_trainer_memory")


def test_synthetic_set_is_the_released_mvcap_layout(bench, tmp_path):
    from ovt.caption.mvcap import read_metadata
    from ovt.train.data import build_table

    data = bench.write_mvcap_set(tmp_path / "set", 30, 8)
    assert data["records"] == 30 and data["objects"] == 4 and data["png_bytes"] > 0
    rows = json.loads((tmp_path / "set" / "metadata.json").read_text())
    assert set(rows[0]) == {"path", "caption", "obj_id", "img_id"} and rows[0]["path"].startswith("./views/")
    assert len({r["caption"] for r in rows}) == 30  # one caption per view
    records = read_metadata(tmp_path / "set" / "metadata.json", check_images=True)  # every path resolves
    assert len(records) == 30
    cfg = bench.train_params(tmp_path / "set" / "metadata.json", "ovt", batch=10, workers=2, mining_batch=16)
    assert cfg.data.twod_resolved == "none" and not cfg.data.cache_prefix and cfg.mining.mode == "full_pass"
    assert cfg.variants == ["ovt"] and cfg.epochs == 1 and not cfg.heldout_viewpoints.enabled
    table = build_table(cfg.data, None, None)
    assert len(table.mv) == 30 and len(table.objects) == 4 and len(table.twod) == 0


@pytest.mark.slow
def test_quick_run_samples_the_real_trainer_at_two_sizes(bench, tmp_path):
    out = tmp_path / "trainer_memory.json"
    bench.main(["--quick", "--tmp", str(tmp_path), "--out", str(out)])
    res = json.loads(out.read_text())
    assert res["quick"] is True and res["cpus"] > 0 and res["torch"] and res["host"] and res["date"]
    cfg = res["config"]
    assert cfg["sizes"] == {"large": 200, "small": 100} and cfg["batch"] == 20 and cfg["loader_workers"] == 2
    assert cfg["cache_prefix"] is False and cfg["mining"]["mode"] == "full_pass" and cfg["model"]["arch"] == "tiny-test"
    for size, n in (("large", 200), ("small", 100)):
        s = res[size]
        assert s["images"] == n and s["data"]["records"] == n
        assert s["table"]["rows"] == n and s["table"]["bytes_per_row"] > 0
        for variant in ("ovt", "contrastive"):
            r = s["runs"][variant]
            assert r["variant"] == variant and r["input"] == "full forward" and r["mv_pairs"] == n
            assert r["steps"] == n // 20 > 0 and r["epochs"] == 1
            assert r["rows_processed"] == n * r["epochs"] and r["rows_dropped_by_drop_last"] == 0
            assert r["mining_rows"] == (n if variant == "ovt" else 0)
            assert r["step_samples"] == r["steps"] and r["timer_samples"] > 0
            assert r["workers"] == 2  # the DataLoader workers were seen and sampled
            for key in (
                "rss_after_imports_bytes",
                "rss_model_bytes",
                "rss_inputs_prepared_bytes",
                "rss_start_bytes",
                "rss_end_bytes",
                "workers_rss_peak_bytes",
                "workers_uss_first_bytes",
                "workers_uss_peak_bytes",
                "rss_anon_start_bytes",
                "rss_anon_end_bytes",
            ):
                assert isinstance(r[key], int) and r[key] > 0, key
            assert r["rss_peak_bytes"] >= max(r["rss_start_bytes"], r["rss_end_bytes"])
            assert r["rss_anon_start_bytes"] <= r["rss_start_bytes"] and r["rss_anon_peak_bytes"] > 0
            assert r["rss_high_water_mark_bytes"] >= r["rss_peak_bytes"] // 2  # the kernel's count, same order
            assert isinstance(r["rss_growth_per_10k_images_bytes"], int)
            assert r["trace"] and r["trace"][-1][0] <= n and all(t[3] > 0 for t in r["trace"])
            assert r["timeline"] and r["timeline"][0][1] == 0  # sampled from before the first step
    assert res["scaling"]["table_python_bytes_per_row"] > 0
    # loaded as the stage does, the columns are not in the heap (at 200 rows the object list still weighs in)
    assert res["scaling"]["table_stage_heap_bytes_per_row"] < res["scaling"]["table_python_bytes_per_row"]
    for variant in ("ovt", "contrastive"):
        sc = res["scaling"][variant]
        assert sc["rows_difference"] == 100
        assert isinstance(sc["rss_start_bytes_per_row"], float) and isinstance(sc["rss_peak_bytes_per_row"], float)
