"""ovt.dvc_driver on a real (tiny) DVC repo: what ran comes from `dvc status --json`, CPU time is the stage's,
progress redraws are thinned out, and the DVC remote follows the services' S3 port."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from ovt import dvc_driver


@pytest.fixture()
def repo(tmp_path):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=tmp_path, check=True)
    return tmp_path


def test_progress_redraws_become_a_few_lines(repo):
    # 1,001 redraws of one bar (as tqdm writes them, `\r` without newline), then a normal line
    (repo / "bar.py").write_text(
        "import sys\n"
        "for i in range(1001):\n"
        "    sys.stderr.write(f'\\rwork {i / 10:5.1f}%|##| {i}/1000')\n"
        "sys.stderr.write('\\n')\n"
        "print('done')\n"
        "open('x', 'w').write('1')\n"
    )
    (repo / "dvc.yaml").write_text("stages:\n  bar:\n    cmd: python bar.py\n    outs: [x]\n")
    lines = []
    res = dvc_driver.repro("bar", cwd=repo, on_line=lines.append)
    bar = [line for line in lines if line.startswith("work")]
    assert 15 <= len(bar) <= 25, bar  # one per 5 %, plus the first and the last
    assert bar[-1].startswith("work 100.0%")
    assert "done" in lines
    assert res.ran_stages == ["bar"] and res.cpu_seconds > 0


def test_ran_and_skipped_come_from_dvc_status(repo):
    (repo / "dvc.yaml").write_text("stages:\n  a:\n    cmd: python -c \"open('a','w').write('1')\"\n    outs: [a]\n")
    assert dvc_driver.status(cwd=repo) == {"a": [{"changed outs": {"a": "deleted"}}]}
    assert dvc_driver.repro("a", cwd=repo, on_line=lambda _: None).ran_stages == ["a"]
    assert dvc_driver.status(cwd=repo) == {}
    again = dvc_driver.repro("a", cwd=repo, on_line=lambda _: None)
    assert (again.ran_stages, again.skipped_stages) == ([], ["a"])
    forced = dvc_driver.repro("a", cwd=repo, on_line=lambda _: None, force=True)
    assert forced.ran_stages == ["a"]


def test_cpu_seconds_count_the_stage_process(repo):
    (repo / "spin.py").write_text(
        "import time\n"
        "t = time.process_time()\n"
        "while time.process_time() - t < 1.0:\n"
        "    pass\n"
        "open('s', 'w').write('1')\n"
    )
    (repo / "dvc.yaml").write_text("stages:\n  spin:\n    cmd: python spin.py\n    outs: [s]\n")
    res = dvc_driver.repro("spin", cwd=repo, on_line=lambda _: None)
    assert res.cpu_seconds >= 1.0, res.cpu_seconds


def test_split_stream_separates_lines_from_redraws():
    got = []
    dvc_driver._split_stream(io.BytesIO(b"a\r\nb\rc\rd\ne"), lambda t, r: got.append((t, r)))
    assert got == [("a", False), ("b", True), ("c", True), ("d", False), ("e", False)]
