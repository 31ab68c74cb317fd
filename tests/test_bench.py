"""`sparsekit bench` / `sparsekit.benchmark` (helpers in the `sparsekit.bench` package): the report keys, honest timing helpers, and the refusal to time zeros."""

import json

import pytest
import torch

import sparsekit
from sparsekit.bench import check_not_zeros, time_fn
from sparsekit.cli import main
from sparsekit.errors import SparsekitError
from tests.tiny import tiny_model


def test_time_fn_excludes_warmup_and_reports_spread():
    calls = []
    out = time_fn(lambda: calls.append(1), "cpu", warmup=2, repeats=3)
    assert len(calls) == 5 and out["runs"] == 3
    assert out["min_ms"] <= out["median_ms"] <= out["max_ms"]
    with pytest.raises(SparsekitError, match="repeats >= 1"):
        time_fn(lambda: None, "cpu", repeats=0)


def test_refuses_to_time_zeros():
    model = tiny_model("llama")
    model.model.layers[1].mlp.up_proj.weight.data.zero_()
    with pytest.raises(SparsekitError, match="refusing to time model.layers.1.mlp.up_proj.weight"):
        check_not_zeros(model)
    with pytest.raises(SparsekitError, match="refusing to time"):
        sparsekit.benchmark(model, prefill=8, decode=2, repeats=1)


def test_bench_report_on_a_model_object():
    report = sparsekit.benchmark(tiny_model("llama"), prefill=32, decode=4, repeats=2)
    b = report["bench"]
    assert report["model"] == "LlamaForCausalLM"  # no name_or_path: the class name
    assert report["device"].startswith("cpu (") and report["dtype"] == "float32"
    assert report["versions"]["torch"] == torch.__version__ and report["versions"]["sparsekit"] == sparsekit.__version__
    # fp32 tiny Llama by hand: untied embed + lm_head (300 x 64), 3 blocks of q/o (64 x 64), k/v (32 x 64),
    # gate/up/down (96 x 64) and 2 norms, and the final norm
    assert report["bytes"] == 4 * (2 * 300 * 64 + 3 * (2 * 64 * 64 + 2 * 32 * 64 + 3 * 96 * 64 + 2 * 64) + 64)
    assert b["prefill"]["tokens"] == 32 and b["prefill"]["runs"] == b["decode"]["runs"] == 2
    assert b["decode"]["new_tokens"] == 4 and b["decode"]["prompt_tokens"] == 16 and b["batch"] == 1
    assert report["latency_ms"] == b["prefill"]["median_ms"] > 0
    assert report["tokens_per_s"] == pytest.approx(4 / (b["decode"]["median_ms"] / 1e3))  # new tokens / median s
    assert b["decode"]["tokens_per_s_min"] <= report["tokens_per_s"] <= b["decode"]["tokens_per_s_max"]
    assert report["peak_mem_bytes"] == b["peak_mem_bytes"] > report["bytes"]  # the process holds the model
    assert report["joules_per_token"] is None  # CPU: not measured, never estimated
    assert report["recipe"] is None and report["ppl"] == report["tokens"] == report["tasks"] == {}
    assert report["lm_head"] == "float32 (untied)"
    tied = tiny_model("llama", tie_word_embeddings=True)
    assert sparsekit.benchmark(tied, prefill=8, decode=2, repeats=1)["lm_head"] == "float32 (tied)"


def test_cli_bench_json(tiny_dir, tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["bench", str(tiny_dir), "--prefill", "16", "--decode", "3", "--repeats", "1", "--json", str(out),
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    report = json.loads(out.read_text())
    energy = report["bench"]
    if report["joules_per_token"] is None:  # this machine: no readable RAPL; the report says why
        assert energy["energy_note"] and f"energy    not measured ({energy['energy_note']})" in printed
    else:
        assert energy["energy_source"] == "rapl" and "J/token (rapl)" in printed
    assert "decode" in printed and f"lm head   {report['lm_head']}" in printed
    assert report["command"].startswith("sparsekit bench") and report["tokens_per_s"] > 0
    with pytest.raises(SystemExit) as info:
        main(["bench", str(tiny_dir), "--decode", "0"])
    assert info.value.code == 2 and "--decode: expected a positive integer" in capsys.readouterr().err


@pytest.mark.slow
def test_compiled_decode_on_the_cpu_generates_what_eager_generates():
    """`--compile` on a CPU: a static cache and inductor around the packed op; the compiled forward is the
    one generate() used (it is restored afterwards) and the greedy tokens equal eager's."""
    from sparsekit.bench.model import benchmark_model

    model = sparsekit.convert(tiny_model("llama", seed=4), [{"quantize": {"format": "int4", "group_size": 32}}],
                              progress=False).model
    prompt = torch.randint(3, 300, (1, 8), generator=torch.Generator().manual_seed(0))
    eager = model.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0)
    forward = model.forward
    result = benchmark_model(model, prefill=8, decode=6, repeats=1, compile=True)
    assert result["compiled"] is True and result["decode"]["tokens_per_s"] > 0
    assert model.forward == forward  # restored
    compiled = torch.compile(model.forward)
    model.forward = compiled
    try:
        again = model.generate(prompt, max_new_tokens=6, do_sample=False, pad_token_id=0,
                               cache_implementation="static")
    finally:
        model.forward = forward
    assert torch.equal(again, eager)


@pytest.mark.slow
def test_compiled_benchmarks_of_two_models_in_one_process(tmp_path):
    """A sweep benchmarks one model after another in one process: the second compiled model must not reuse
    the first one's graph (module guards are skipped while timing), e.g. dense nn.Linear then packed."""
    from sparsekit.bench.model import benchmark_model

    dense = tiny_model("llama", seed=5)
    packed = sparsekit.convert(tiny_model("llama", seed=6), [{"quantize": {"format": "int4", "group_size": 32}}],
                               progress=False).model
    for model in (dense, packed):
        result = benchmark_model(model, prefill=8, decode=4, repeats=1, compile=True)
        assert result["compiled"] is True and result["decode"]["tokens_per_s"] > 0


# --- CPU energy: RAPL package counters (a fake sysfs tree: this machine exposes none) ----------------------------
def _fake_rapl(root, packages: dict[str, int], wrap: int = 2**32) -> None:
    for i, (name, value) in enumerate(packages.items()):
        d = root / name
        d.mkdir(parents=True)
        (d / "name").write_text(f"package-{i}\n")
        (d / "energy_uj").write_text(f"{value}\n")
        (d / "max_energy_range_uj").write_text(f"{wrap - 1}\n")
    psys = root / "intel-rapl:9"  # the platform domain contains the packages: never added to them
    psys.mkdir()
    (psys / "name").write_text("psys\n")
    (psys / "energy_uj").write_text("7\n")
    sub = root / "intel-rapl:0:0"  # a sub-domain (cores) of package 0: part of it, never added again
    sub.mkdir()
    (sub / "energy_uj").write_text("5\n")


def test_rapl_sums_package_counters_and_handles_a_wrap(tmp_path, monkeypatch):
    from sparsekit.bench import energy

    _fake_rapl(tmp_path, {"intel-rapl:0": 1_000_000, "intel-rapl:1": 2**32 - 500_000})
    monkeypatch.setattr(energy, "RAPL_ROOT", tmp_path)
    with energy.EnergyMeter("cpu") as meter:
        (tmp_path / "intel-rapl:0" / "energy_uj").write_text("3500000\n")  # +2.5 J
        (tmp_path / "intel-rapl:1" / "energy_uj").write_text("1000000\n")  # wrapped: +1.5 J
        (tmp_path / "intel-rapl:0:0" / "energy_uj").write_text("999999999\n")
        (tmp_path / "intel-rapl:9" / "energy_uj").write_text("888888888\n")
    assert meter.source == "rapl" and meter.why is None
    assert meter.joules == pytest.approx(4.0)


def test_without_rapl_energy_is_none_with_the_reason(tmp_path, monkeypatch):
    from sparsekit.bench import energy

    monkeypatch.setattr(energy, "RAPL_ROOT", tmp_path / "absent")
    with energy.EnergyMeter("cpu") as meter:
        pass
    assert meter.joules is None and "does not exist" in meter.why
    _fake_rapl(tmp_path, {"intel-rapl:0": 1})
    (tmp_path / "intel-rapl:0" / "energy_uj").chmod(0)
    monkeypatch.setattr(energy, "RAPL_ROOT", tmp_path)
    import os

    if os.geteuid() != 0:  # root reads a file whatever its mode
        with energy.EnergyMeter("cpu") as meter:
            pass
        assert meter.joules is None and "not readable" in meter.why
