import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from ovt.evaluate.folders import BenchmarkSpec, load_benchmark, run_benchmark_table

VOCAB = ["aircraft_carrier", "barrel", "sofa", "teapot"]  # verbatim names, underscores kept
COLOURS = {"barrel": (255, 0, 0), "sofa": (0, 255, 0), "teapot": (0, 0, 255)}


def make_fixture(root, gt=("sofa", "barrel", "teapot"), per_class=3):
    """ImageNet-V-like layout: folders named by index (their sort order matters), a vocabulary and a gt file."""
    img_dir = root / "images"
    for k, name in enumerate(gt):
        d = img_dir / f"n{k:03d}"
        d.mkdir(parents=True)
        for j in range(per_class):
            Image.new("RGB", (8, 8), COLOURS.get(name, (9, 9, 9))).save(d / f"{j}.png")
    (root / "labels.txt").write_text("\n".join(VOCAB) + "\n")
    (root / "gt.txt").write_text("\n".join(gt) + "\n")
    return BenchmarkSpec("toy", img_dir, root / "labels.txt", root / "gt.txt")


class ColourModel:
    """Fake encoders on hand-made vectors: an image embeds as its mean colour (in dims 1..3); a prompt embeds as
    its class's colour, so zero-shot prediction is exact for the coloured classes."""

    def preprocess(self, im):
        return torch.from_numpy(np.asarray(im, dtype=np.float32) / 255.0).permute(2, 0, 1)

    def encode_image(self, x):
        rgb = x.mean(dim=(2, 3))
        return F.normalize(torch.cat([torch.full((len(x), 1), 0.01), rgb], dim=1), dim=-1)

    def encode_text(self, texts):
        rows = []
        for t in texts:
            name = next(n for n in VOCAB if n in t)
            rows.append([1.0, 0, 0, 0] if name not in COLOURS else [0.0, *np.array(COLOURS[name]) / 255.0])
        return F.normalize(torch.tensor(rows, dtype=torch.float32), dim=-1)


def test_gt_line_k_labels_the_kth_sorted_folder(tmp_path):
    data = load_benchmark(make_fixture(tmp_path))
    assert data.classnames == tuple(VOCAB)
    assert len(data.paths) == 9
    # n000 -> sofa (2), n001 -> barrel (1), n002 -> teapot (3)
    assert data.targets.tolist() == [2] * 3 + [1] * 3 + [3] * 3
    assert all(p.parent.name == f"n{k // 3:03d}" for k, p in enumerate(data.paths))


def test_zero_shot_table_scores_a_fake_encoder_pair(tmp_path):
    spec = make_fixture(tmp_path)
    table = run_benchmark_table(
        ColourModel(), [spec, BenchmarkSpec("toy2", spec.folder, spec.vocabulary, spec.gt)], top_k=2, progress=False
    )
    assert table["toy"] == {"top1": 1.0, "top2": 1.0, "n": 9, "n_failed": 0}
    assert table["mean"]["top1"] == 1.0


def test_wrong_folder_count_and_unknown_names_are_named(tmp_path):
    spec = make_fixture(tmp_path / "a")
    (spec.gt).write_text("sofa\nbarrel\n")
    with pytest.raises(ValueError, match="2 names but .* has 3 class folders"):
        load_benchmark(spec)
    spec = make_fixture(tmp_path / "b", gt=("sofa", "zebra", "teapot"))
    with pytest.raises(ValueError, match="zebra"):
        load_benchmark(spec)
    with pytest.raises(FileNotFoundError, match="vocabulary"):
        load_benchmark(BenchmarkSpec("x", spec.folder, tmp_path / "nope.txt", spec.gt))


def test_unreadable_image_is_skipped_and_counted(tmp_path):
    spec = make_fixture(tmp_path)
    (spec.folder / "n000" / "broken.png").write_bytes(b"not a png")
    table = run_benchmark_table(ColourModel(), [spec], progress=False)
    assert table["toy"]["n"] == 9 and table["toy"]["n_failed"] == 1
