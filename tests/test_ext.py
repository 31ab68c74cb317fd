"""The compiled extension (GPU machines): it loads, matches the Python version, and runs its probe."""

import pytest
import torch

from sparsekit import __version__, _ext


@pytest.mark.cuda_ext
@pytest.mark.gpu
def test_extension_version_and_arch_probe():
    info = _ext.info()
    assert info["available"] and info["version"] == __version__
    major, minor = torch.cuda.get_device_capability(0)
    arch = info["compiled_arch"][0]
    # The image the driver picked is for this GPU's major architecture (e.g. sm_90a on H100/H200, sm_80 on A100).
    assert arch // 100 == major and arch <= major * 100 + minor * 10


@pytest.mark.cuda_ext
@pytest.mark.gpu
def test_extension_rejects_bad_device_index():
    with pytest.raises(RuntimeError, match="out of range"):
        _ext.load().compiled_arch(torch.cuda.device_count())
