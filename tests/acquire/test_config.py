import pytest

from ovt.acquire.config import AcquireParams
from ovt.params_base import ParamsError, validate_block


def _err(data) -> str:
    with pytest.raises(ParamsError) as exc:
        validate_block(AcquireParams, data, name="acquire")
    return str(exc.value)


def test_defaults_are_the_embedded_default():
    p = validate_block(AcquireParams, None, name="acquire")
    assert p.sources == ["sweethome3d"] and p.filters.drop_categories == ["Staircases"]
    assert (p.split.validation_fraction, p.split.test_fraction) == (0.15, 0.2) and p.labels.min_per_class == 6
    assert p.split.group_by == ["geometry", "name_family"] and p.split.max_family_size == 10
    assert "/usr/share/sweethome3d/furniture" in p.sweethome3d.search_paths


def test_unknown_keys_are_named_with_allowed_keys():
    msg = _err({"filters": {"max_face": 10}})
    assert "acquire.filters.max_face: unknown key" in msg and "max_faces" in msg
    assert "acquire.sourcez: unknown key" in _err({"sourcez": ["local"]})


def test_bad_values_are_named():
    assert "acquire.sources.0" in _err({"sources": ["shapenet"]}) and "sweethome3d" in _err({"sources": ["x"]})
    assert "acquire.split.test_fraction" in _err({"split": {"test_fraction": 1.5}})
    assert "leaves no training objects" in _err({"split": {"test_fraction": 0.6, "validation_fraction": 0.4}})
    assert "acquire.split.group_by.0" in _err({"split": {"group_by": ["colour"]}})
    assert "acquire.split.heldout_fraction: unknown key" in _err({"split": {"heldout_fraction": 0.2}})
    assert "invalid regex" in _err({"filters": {"exclude_names": ["(unclosed"]}})
    assert "min_faces (10) > max_faces (5)" in _err({"filters": {"min_faces": 10, "max_faces": 5}})
    assert "acquire.filters.max_assets" in _err({"filters": {"max_assets": 0}})


def test_enabled_sources_must_be_configured():
    assert "local.root is not set" in _err({"sources": ["local"]})
    assert "lvis_categories is empty" in _err({"sources": ["sweethome3d", "objaverse"]})
    assert "twice" in _err({"sources": ["sweethome3d", "sweethome3d"]})


def test_params_are_frozen():
    p = AcquireParams()
    with pytest.raises(Exception):
        p.sources = ["local"]
