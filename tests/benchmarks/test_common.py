"""The frame every benchmark result is written in: one set of key names, and no torch import for torch-free scripts."""

from __future__ import annotations

import json
import subprocess
import sys

from tests.benchmarks.scripts import BENCHMARKS

FRAME = {"host", "machine", "python", "cpus", "loadavg_1m_before", "loadavg_1m_after", "date", "command"}


def test_frame_records_torch_when_the_benchmark_imported_it(tmp_path):
    import torch

    from benchmarks.common import write_result

    out = tmp_path / "r.json"
    res = write_result(out, {"n": 3, "nested": {"s": 1.5}}, load_before=0.123, echo=False)
    assert json.loads(out.read_text()) == res
    assert set(res) == FRAME | {"torch", "threads", "n", "nested"}
    assert res["torch"] == torch.__version__ and res["threads"] == torch.get_num_threads()
    assert res["n"] == 3 and res["nested"] == {"s": 1.5} and res["loadavg_1m_before"] == 0.12


def test_frame_does_not_import_torch(tmp_path):
    out = tmp_path / "r.json"
    code = (
        "import sys; from benchmarks.common import write_result; "
        f"write_result({str(out)!r}, {{'n': 1}}, load_before=0.0, echo=False); print('torch' in sys.modules)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=BENCHMARKS.parent, capture_output=True, text=True, check=True
    )
    assert proc.stdout.strip() == "False"
    assert set(json.loads(out.read_text())) == FRAME | {"n"}
