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


def test_cli_bench_json(tiny_dir, tmp_path, capsys):
    out = tmp_path / "b.json"
    assert main(["bench", str(tiny_dir), "--prefill", "16", "--decode", "3", "--repeats", "1", "--json", str(out),
                 "--quiet"]) == 0
    printed = capsys.readouterr().out
    assert "decode" in printed and "energy    not measured (CPU)" in printed
    report = json.loads(out.read_text())
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
