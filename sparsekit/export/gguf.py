"""Export to GGUF, the file llama.cpp (and Ollama, LM Studio) run, written with the `gguf` package.

Tensor types, closest to what sparsekit computes (ggml blocks are 32 inputs of one row, one fp16 `d`):

| sparsekit weight                       | GGUF type | exact?                                                     |
|----------------------------------------|-----------|------------------------------------------------------------|
| int8, per channel or group % 32 == 0    | Q8_0      | yes: each block gets its group's scale as `d`, the codes as they are |
| int4 symmetric, per channel / g % 32 == 0 | Q4_0    | yes: `d` = scale, nibble = code + 8 (Q4_0 decodes (q - 8) * d) |
| int4 with zero points                  | Q4_1      | up to fp16 rounding of Q4_1's offset m = -zero * scale (measured) |
| mxfp4                                  | MXFP4     | re-encoded by `gguf` from the values (same OCP block of 32; measured) |
| other formats, or K % 32 != 0 / groups that split a block | Q8_0 (> 4 bits) or Q4_0 re-quantized from the values | no: the error is measured and stated |
| unquantized projections, embeddings    | the export dtype (F16 by default) | to that dtype's rounding   |
| norms and other 1-D tensors            | F32       | yes                                                        |

Pruned weights are zeros in every block (a Q4_0 nibble of 8, a Q8_0 code of 0); GGUF has no sparsity
metadata. Llama-architecture q/k rows are permuted from Hugging Face's rotate-half order to ggml's
interleaved RoPE, as llama.cpp's own converter does (a row permutation: blocks and scales move with
their rows). After writing, the file is read back with `gguf.GGUFReader`, every tensor dequantized with
`gguf.quants` and compared with sparsekit's values: the summary's `max_abs_error` per tensor comes from
that read, not from the writer.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sparsekit.export.source import ExportError, Projection, Source
from sparsekit.quant.base import QTensor

log = logging.getLogger(__name__)

BLOCK = 32  # ggml's Q4_0 / Q4_1 / Q8_0 / MXFP4 block: 32 consecutive inputs of one row


@dataclass(frozen=True)
class Arch:
    """How one Hugging Face `model_type` maps onto a llama.cpp architecture."""

    gguf_name: str
    permute_qk: bool  # llama.cpp's llama arch applies RoPE to interleaved pairs: convert rotate-half rows


#: Hugging Face model_type -> llama.cpp architecture (the dense decoder families whose tensors map 1:1)
ARCHS: dict[str, Arch] = {
    "llama": Arch("llama", True),
    "mistral": Arch("llama", True),
    "qwen2": Arch("qwen2", False),
}


# --- ggml blocks from sparsekit codes (pure functions; `gguf.quants` is their reader) ---------------------------
def _block_scales(q: QTensor) -> np.ndarray:
    """One fp16 `d` per block of 32 inputs, taken from the group that holds the block."""
    n, k = q.shape
    group = q.group_size if q.group_size > 0 else k
    index = torch.arange(0, k, BLOCK) // group
    return q.scales.float()[:, index].to(torch.float16).numpy()


def _nibbles(q4: np.ndarray) -> np.ndarray:
    """`[N, K]` values 0..15 -> ggml's packing: element j low nibble, element j + 16 high nibble, per block."""
    n, k = q4.shape
    blocks = q4.reshape(n, k // BLOCK, 2, BLOCK // 2).astype(np.uint8)
    return blocks[:, :, 0, :] | (blocks[:, :, 1, :] << np.uint8(4))


def q8_0_blocks(q: QTensor) -> np.ndarray:
    """Q8_0 bytes `[N, K / 32 * 34]`: fp16 d then 32 int8 codes per block."""
    n, k = q.shape
    d = _block_scales(q).reshape(n, k // BLOCK, 1).view(np.uint8)
    codes = q.codes.to(torch.int8).numpy().reshape(n, k // BLOCK, BLOCK).view(np.uint8)
    return np.concatenate([d, codes], axis=-1).reshape(n, -1)


def q4_0_blocks(q: QTensor) -> np.ndarray:
    """Q4_0 bytes `[N, K / 32 * 18]` of symmetric int4 codes: fp16 d, 16 bytes of (code + 8) nibbles."""
    n, k = q.shape
    d = _block_scales(q).reshape(n, k // BLOCK, 1).view(np.uint8)
    qs = _nibbles((q.codes.to(torch.int16) + 8).numpy())
    return np.concatenate([d, qs], axis=-1).reshape(n, -1)


def q4_1_blocks(q: QTensor) -> np.ndarray:
    """Q4_1 bytes `[N, K / 32 * 20]` of asymmetric int4 codes: d = scale, m = -zero * scale (fp16), nibbles."""
    n, k = q.shape
    group = q.group_size if q.group_size > 0 else k
    index = torch.arange(0, k, BLOCK) // group
    scale = q.scales.float()[:, index]
    d = scale.to(torch.float16).numpy().reshape(n, k // BLOCK, 1).view(np.uint8)
    m = (-q.zeros.float()[:, index] * scale).to(torch.float16).numpy().reshape(n, k // BLOCK, 1).view(np.uint8)
    qs = _nibbles(q.codes.to(torch.int16).numpy())
    return np.concatenate([d, m, qs], axis=-1).reshape(n, -1)


def _blocks_fit(q: QTensor) -> bool:
    """Whole blocks of 32 inputs, each inside one sparsekit group (so one `d` per block is exact)."""
    k = q.shape[1]
    return k % BLOCK == 0 and (q.group_size in (0, k) or (q.group_size > 0 and q.group_size % BLOCK == 0))


def encode(proj: Projection, dtype: torch.dtype) -> tuple[np.ndarray, Any, str]:
    """(data, GGML type, how) of one projection: exact blocks where the grids match, else a stated
    re-quantization of its values (see the module table)."""
    from gguf import GGMLQuantizationType as T
    from gguf.quants import quantize

    q, values = proj.q, proj.values.numpy()
    if q is None:
        return _floating(values, dtype)
    k = q.shape[1]
    if _blocks_fit(q) and q.format == "int8" and q.zeros is None:
        return q8_0_blocks(q), T.Q8_0, "exact"
    if _blocks_fit(q) and q.format == "int4":
        if q.zeros is None:
            return q4_0_blocks(q), T.Q4_0, "exact"
        return q4_1_blocks(q), T.Q4_1, "offset m rounded to fp16"
    if k % BLOCK:
        return (*_floating(values, dtype)[:2],
                f"{q.format} stored as {_floating(values, dtype)[2]}: in_features {k} is not a multiple of 32")
    if q.format == "mxfp4":
        return quantize(values, T.MXFP4), T.MXFP4, "re-encoded by gguf"
    target = T.Q8_0 if _element_bits(q) > 4 else T.Q4_0
    return quantize(values, target), target, f"{q.format} g{q.group_size} re-quantized to {target.name}"


def _element_bits(q: QTensor) -> float:
    from sparsekit.quant.formats import get_format

    try:
        return float(get_format(q.format).element_bits)
    except Exception:  # an unknown name: treat it as wide, Q8_0 loses least
        return 8.0


def _floating(values: np.ndarray, dtype: torch.dtype) -> tuple[np.ndarray, Any, str]:
    from gguf import GGMLQuantizationType as T

    if dtype == torch.float32 or values.ndim == 1:  # llama.cpp keeps 1-D tensors (norms, biases) in F32
        return values.astype(np.float32), T.F32, "F32"
    if dtype == torch.bfloat16:
        from gguf.quants import quantize

        return quantize(values.astype(np.float32), T.BF16), T.BF16, "BF16"
    return values.astype(np.float16), T.F16, "F16"


# --- the model: names, hyper-parameters, tokenizer -----------------------------------------------------------------
def _permute(rows: np.ndarray | torch.Tensor, heads: int) -> Any:
    """Hugging Face rotate-half rows -> ggml interleaved rows (llama.cpp's convert_hf_to_gguf does the same)."""
    n = rows.shape[0]
    shape = (heads, 2, n // heads // 2, *rows.shape[1:])
    return rows.reshape(shape).swapaxes(1, 2).reshape(rows.shape)


def _unpermute(rows: np.ndarray, heads: int) -> np.ndarray:
    """ggml interleaved rows -> Hugging Face rotate-half rows (the inverse of `_permute`)."""
    n = rows.shape[0]
    return rows.reshape(heads, n // heads // 2, 2, *rows.shape[1:]).swapaxes(1, 2).reshape(rows.shape)


def _permute_projection(proj: Projection, heads: int) -> Projection:
    q = proj.q
    if q is not None:
        q = QTensor(q.format, _permute(q.codes, heads), _permute(q.scales, heads),
                    None if q.zeros is None else _permute(q.zeros, heads), q.group_size, q.shape)
    return Projection(proj.name, _permute(proj.values, heads), q, proj.pattern,
                      None if proj.mask is None else _permute(proj.mask, heads))


def _rope_theta(config: Any) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    kind = params.get("rope_type", "default") if isinstance(params, dict) else "default"
    scaling = getattr(config, "rope_scaling", None)
    if kind != "default" or (isinstance(scaling, dict) and scaling.get("rope_type", scaling.get("type")) not in
                             (None, "default")):
        raise ExportError(f"RoPE scaling {kind!r} is not written by sparsekit's GGUF export yet (llama.cpp needs its "
                          "frequency factors); models with plain RoPE export")
    theta = params.get("rope_theta") if isinstance(params, dict) else None
    return float(theta if theta is not None else getattr(config, "rope_theta", 10000.0))


def _hparams(writer: Any, config: Any) -> None:
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(int(config.num_hidden_layers))
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(int(heads))
    writer.add_head_count_kv(int(getattr(config, "num_key_value_heads", None) or heads))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_rope_dimension_count(int(head_dim))
    writer.add_vocab_size(int(config.vocab_size))
    if head_dim * heads != config.hidden_size:
        writer.add_key_length(int(head_dim))
        writer.add_value_length(int(head_dim))


def _source_gguf(base_model: str | None) -> Path | None:
    """The GGUF file the checkpoint's base model was loaded from, if any (its tokenizer keys are llama.cpp's own)."""
    if not base_model:
        return None
    from sparsekit.models.loader import SHORT_NAMES

    if base_model in SHORT_NAMES:
        try:
            return SHORT_NAMES[base_model].path()
        except Exception:
            return None
    path = Path(base_model).expanduser()
    return path if path.suffix == ".gguf" and path.is_file() else None


def _tokenizer(writer: Any, tokenizer: Any, vocab_size: int, base: Path | None) -> str:
    """Byte-level BPE vocabulary, merges, token types and special ids from a fast tokenizer; returns the
    pre-tokenizer name written (llama.cpp picks its split regex by it)."""
    import gguf

    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = json.loads(backend.to_str()) if backend is not None else {}
    model = spec.get("model") or {}
    byte_level = "ByteLevel" in json.dumps(spec.get("pre_tokenizer") or {})
    if model.get("type") != "BPE" or not byte_level or model.get("byte_fallback"):
        # a SentencePiece-style BPE (Llama-2, Mistral: Metaspace + byte fallback) written as gpt2 would tokenize
        # wrongly in llama.cpp; it needs the 'llama' vocabulary with scores, which this export does not write
        what = model.get("type") or type(tokenizer).__name__
        raise ExportError(f"the GGUF export writes byte-level BPE tokenizers (tokenizer.json: a BPE model behind a "
                          f"ByteLevel pre-tokenizer, no byte fallback); this tokenizer is {what}"
                          f"{'' if byte_level else ' without ByteLevel'}{' with byte fallback' if model.get('byte_fallback') else ''}")
    vocab: dict[str, int] = dict(model["vocab"])
    added = {t["id"]: t for t in spec.get("added_tokens") or []}
    for tid, t in added.items():
        vocab[t["content"]] = tid
    by_id = {i: tok for tok, i in vocab.items()}
    tokens, types = [], []
    for i in range(vocab_size):
        if i in by_id:
            tokens.append(by_id[i])
            special = added.get(i, {}).get("special")
            types.append(gguf.TokenType.CONTROL if special else
                         gguf.TokenType.USER_DEFINED if i in added else gguf.TokenType.NORMAL)
        else:  # the embedding has more rows than the tokenizer has tokens
            tokens.append(f"[PAD{i}]")
            types.append(gguf.TokenType.UNUSED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges") or []]
    pre = None
    if base is not None:
        field = gguf.GGUFReader(str(base)).fields.get("tokenizer.ggml.pre")
        if field is not None:
            pre = str(field.contents())
    if pre is None:
        # llama.cpp picks its pre-tokenizer regex by this name, which its converter finds by hashing the
        # tokenizer's output on a probe text; without the source GGUF the name is not known here
        pre = "default"
        log.warning("GGUF export: the tokenizer's llama.cpp pre-tokenizer name is unknown (no source GGUF); writing "
                    "'default', which splits text like GPT-2: models trained with another split (Llama-3, Qwen2) "
                    "tokenize slightly differently in llama.cpp")
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(types)
    writer.add_token_merges(merges)
    for what, add in (("bos", writer.add_bos_token_id), ("eos", writer.add_eos_token_id),
                      ("unk", writer.add_unk_token_id), ("pad", writer.add_pad_token_id)):
        tid = getattr(tokenizer, f"{what}_token_id", None)
        if tid is not None:
            add(int(tid))
    writer.add_add_bos_token(bool(getattr(tokenizer, "add_bos_token", False)))
    template = getattr(tokenizer, "chat_template", None)
    if isinstance(template, str):
        writer.add_chat_template(template)
    return pre


def read_back(path: str | Path) -> dict[str, tuple[np.ndarray, str]]:
    """Every tensor of a GGUF file dequantized by `gguf` (shape as ggml's rows x inputs), with its type name."""
    import gguf
    from gguf.quants import dequantize

    out = {}
    for t in gguf.GGUFReader(str(path)).tensors:
        shape = tuple(int(s) for s in reversed(t.shape.tolist()))
        out[t.name] = (dequantize(t.data, t.tensor_type).reshape(shape), t.tensor_type.name)
    return out


def export_gguf(source: Source, out: Path, dtype: torch.dtype = torch.float16) -> dict:
    """Write `source` as one GGUF file at `out`; read it back and return the summary (see module docstring)."""
    import gguf

    config = source.model.config
    arch = ARCHS.get(getattr(config, "model_type", ""))
    if arch is None:
        raise ExportError(f"GGUF export knows the {', '.join(sorted(ARCHS))} architectures; this model is "
                          f"{getattr(config, 'model_type', type(source.model).__name__)!r}")
    window = getattr(config, "sliding_window", None)
    if window and getattr(config, "use_sliding_window", True):
        raise ExportError(f"this {config.model_type} model attends through a sliding window of {window} tokens, which "
                          f"llama.cpp's {arch.gguf_name} architecture does not apply; export a model with full attention")
    if source.tokenizer is None:
        raise ExportError(f"{source.path} was saved without a tokenizer, which a GGUF file carries: save the "
                          "checkpoint with its tokenizer (sparsekit.save(result, out, tokenizer=...))")
    name_map = gguf.get_tensor_name_map(gguf.MODEL_ARCH[arch.gguf_name.upper()], config.num_hidden_layers)
    writer = gguf.GGUFWriter(str(out), arch.gguf_name)
    writer.add_name(str(source.meta.get("base_model") or source.path.name))
    _hparams(writer, config)
    pre = _tokenizer(writer, source.tokenizer, int(config.vocab_size), _source_gguf(source.meta.get("base_model")))
    try:
        expected, how, types = _write_tensors(writer, source, name_map, arch, dtype)
        ftype = gguf.LlamaFileType.MOSTLY_Q4_0 if "Q4_0" in types else \
            gguf.LlamaFileType.MOSTLY_Q8_0 if "Q8_0" in types else gguf.LlamaFileType.MOSTLY_F16
        writer.add_file_type(int(ftype))
        writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file(progress=False)
    finally:
        writer.close()
    errors = compare(out, expected)
    for gname, entry in how.items():
        entry["max_abs_error"] = errors[gname]
    inexact = {g: e for g, e in how.items() if e["max_abs_error"] > 0}
    if inexact:
        worst = max(inexact.items(), key=lambda kv: kv[1]["max_abs_error"])
        log.warning("GGUF export: %d of %d quantized tensors are not bit-exact (largest error %.3g in %s: %s)",
                    len(inexact), len(how), worst[1]["max_abs_error"], worst[0], worst[1]["how"])
    return {"architecture": arch.gguf_name, "tokenizer_pre": pre, "tensor_types": types, "tensors": how,
            "exact_quantized": len(how) - len(inexact), "inexact_quantized": len(inexact),
            "max_abs_error_floating": max((e for g, e in errors.items() if g not in how), default=0.0),
            "bytes": out.stat().st_size if out.exists() else None}


def compare(file: Path, expected: dict[str, tuple[np.ndarray, int | None]]) -> dict[str, float]:
    """Largest |GGUF - sparsekit| per tensor, reading and dequantizing one tensor at a time (a 7B model's
    fp32 copy is never held whole); permuted q/k rows are put back in Hugging Face order first."""
    import gguf
    from gguf.quants import dequantize

    errors = {}
    for t in gguf.GGUFReader(str(file)).tensors:
        want, heads = expected[t.name]
        got = dequantize(t.data, t.tensor_type).reshape(want.shape)
        if heads is not None:
            got = _unpermute(got, heads)
        errors[t.name] = float(np.abs(got.astype(np.float64) - want).max()) if want.size else 0.0
    return errors


def _write_tensors(writer: Any, source: Source, name_map: Any, arch: Arch, dtype: torch.dtype
                   ) -> tuple[dict[str, tuple[np.ndarray, int | None]], dict[str, dict[str, Any]], dict[str, int]]:
    """Add every tensor to `writer`; return (GGUF name -> (sparsekit's values, heads if its rows were permuted),
    GGUF name -> how a quantized projection was encoded, tensor type -> count)."""
    config = source.model.config
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    tied = bool(getattr(config, "tie_word_embeddings", False))
    expected: dict[str, tuple[np.ndarray, int | None]] = {}
    how: dict[str, dict[str, Any]] = {}
    types: dict[str, int] = {}
    seen = set()
    for key, tensor in source.model.state_dict().items():
        module = key.rpartition(".")[0]
        if tied and module == "lm_head":
            continue  # llama.cpp reads the output projection from token_embd when output.weight is absent
        ident = (tensor.data_ptr(), tuple(tensor.shape))
        if ident in seen:
            continue
        seen.add(ident)
        gname = name_map.get_name(key, try_suffixes=(".weight", ".bias"))
        if gname is None:
            raise ExportError(f"{key} has no GGUF name in llama.cpp's {arch.gguf_name} architecture")
        proj = source.projections.get(module) if key.endswith(".weight") else None
        proj = proj or Projection(module, tensor.detach().float())
        permuted = None
        if arch.permute_qk and key.endswith(("q_proj.weight", "k_proj.weight", "q_proj.bias", "k_proj.bias")):
            permuted = heads if "q_proj" in key else kv_heads
        expected[gname] = (proj.values.numpy(), permuted)  # a view: the comparison un-permutes what it reads
        if permuted is not None:
            proj = _permute_projection(proj, permuted)
        data, qtype, note = encode(proj, dtype)
        writer.add_tensor(gname, data, raw_dtype=qtype)
        types[qtype.name] = types.get(qtype.name, 0) + 1
        if proj.q is not None:
            how[gname] = {"source": f"{proj.q.format} g{proj.q.group_size}", "type": qtype.name, "how": note}
    return expected, how, types

