import subprocess
import sys

import pytest

from ovt.lazy import lazy_exports


def test_lazy_exports_resolve_on_first_use_and_name_the_package():
    getattr_, names = lazy_exports("pkg", {"dumps": "json", "sqrt": "math"})
    assert names == ["dumps", "sqrt"]
    assert getattr_("sqrt")(9.0) == 3.0
    with pytest.raises(AttributeError, match="module 'pkg' has no attribute 'nope'"):
        getattr_("nope")


@pytest.mark.parametrize(
    "package", ["ovt.acquire", "ovt.caption", "ovt.evaluate", "ovt.features", "ovt.model", "ovt.services", "ovt.train"]
)
def test_packages_import_without_torch_and_export_what_they_list(package):
    code = (
        f"import importlib, sys; m = importlib.import_module({package!r}); "
        "assert 'torch' not in sys.modules, 'importing the package pulled torch'; "
        "print(len(m.__all__))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    import importlib

    module = importlib.import_module(package)
    for name in module.__all__:
        assert getattr(module, name) is not None, f"{package}.{name}"
