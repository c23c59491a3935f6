"""The `vlm` backend on a tiny randomly initialised BLIP: the real processor -> prompt -> generate -> decode path."""

import pytest
from PIL import Image

from ovt.caption.base import View
from ovt.caption.config import VlmParams
from ovt.caption.vlm import MissingModelError, VlmCaptioner

GUIDED = "a 3d render of a {category},"
PLAIN = "a 3d render of"


def _params(path, **kw):
    kw.setdefault("num_beams", 1)
    return VlmParams(model=str(path), prompt_guided=GUIDED, prompt_plain=PLAIN, max_new_tokens=6, **kw)


def _views():
    out = []
    for aid, label, colour in [("aa", "sofa", (200, 30, 30)), ("bb", "lamp", (240, 220, 40))]:
        for v in range(3):
            out.append(
                View(
                    key=f"{aid}_{v:03d}",
                    asset_id=aid,
                    view=v,
                    image=Image.new("RGB", (40, 40), colour),
                    azimuth=90.0 * v,
                    elevation=10.0,
                    name=f"My {label}",
                    label=label,
                )
            )
    return out


@pytest.fixture(scope="module")
def captioner(tiny_blip_dir):
    return VlmCaptioner(_params(tiny_blip_dir, batch_size=2))


def test_guided_captions_carry_the_category_and_provenance(captioner, tiny_blip_dir):
    views = _views()
    caps = captioner.caption(views, list(range(100, 106)))
    assert [c.key for c in caps] == [v.key for v in views]  # order kept across prompt groups and batches
    for c, v in zip(caps, views):
        assert c.backend == "vlm" and c.model == str(tiny_blip_dir) and c.guided
        assert c.prompt == f"a 3d render of a {v.label},"
        # BLIP conditional captioning continues the prefix: the caption starts with the guided prompt
        assert c.caption.startswith(f"a 3d render of a {v.label},") and len(c.caption) > len(c.prompt)
        assert c.model_version.startswith("blip:config-")
    assert [c.seed for c in caps] == list(range(100, 106))


def test_batched_equals_unbatched(captioner, tiny_blip_dir):
    one = VlmCaptioner(_params(tiny_blip_dir, batch_size=1))
    views = _views()[:3]
    assert [c.caption for c in one.caption(views, [0, 1, 2])] == [
        c.caption for c in captioner.caption(views, [0, 1, 2])
    ]


def test_guidance_off_uses_the_plain_prompt(tiny_blip_dir):
    plain = VlmCaptioner(_params(tiny_blip_dir), guidance=False)
    caps = plain.caption(_views()[:2], [0, 1])
    assert all(c.prompt == PLAIN and not c.guided and c.caption.startswith(PLAIN) for c in caps)
    assert all("sofa" not in c.prompt for c in caps)


def test_missing_weights_name_the_model(tmp_path):
    with pytest.raises(MissingModelError, match="no-such-org/no-such-captioner"):
        VlmCaptioner(VlmParams(model="no-such-org/no-such-captioner"))
    with pytest.raises(MissingModelError, match="empty_dir"):
        (tmp_path / "empty_dir").mkdir()
        VlmCaptioner(VlmParams(model=str(tmp_path / "empty_dir")))


def test_prompt_template_must_have_the_category_slot():
    with pytest.raises(ValueError, match="category"):
        VlmParams(prompt_guided="describe the image")


def test_instructblip_with_the_papers_prompt(tiny_instructblip_dir):
    """The paper's captioner family (InstructBLIP, T5 LM) with the default (paper) prompts and generation."""
    cap = VlmCaptioner(VlmParams(model=str(tiny_instructblip_dir), max_new_tokens=6, batch_size=2))
    assert cap.model_type == "instructblip"
    caps = cap.caption(_views(), list(range(6)))
    sofa = caps[0]
    assert sofa.prompt == (
        "Write a short description for the image, noting that the main instance of the image is a sofa."
    )
    assert caps[3].prompt.endswith("is a lamp.") and all(c.guided for c in caps)
    # an encoder-decoder LM returns only new text: nothing of the instruction is echoed into the caption
    assert all(c.caption and "write a short description" not in c.caption.lower() for c in caps)
    assert sofa.model_version.startswith("instructblip:config-")
    plain = VlmCaptioner(
        VlmParams(model=str(tiny_instructblip_dir), max_new_tokens=4, num_beams=1), guidance=False
    ).caption(_views()[:1], [0])[0]
    assert plain.prompt == "Write a short description for the image." and not plain.guided
