"""Tiny random-initialised models of every supported architecture, and a tiny offline tokenizer."""

from __future__ import annotations

from pathlib import Path

import torch
import transformers as T

COMMON = dict(hidden_size=64, intermediate_size=96, num_hidden_layers=3, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16, vocab_size=300, max_position_embeddings=512,
              pad_token_id=0, bos_token_id=1, eos_token_id=2)

# sliding_window=8 is far below the test sequence lengths, so a block that got the wrong layer type's
# mask (full vs sliding) would produce different outputs and fail the tests.
TINY: dict[str, tuple[type, dict]] = {
    "llama": (T.LlamaConfig, {}),
    "mistral": (T.MistralConfig, {"sliding_window": 8}),
    "qwen2": (T.Qwen2Config, {}),
    "qwen2_moe": (T.Qwen2MoeConfig, {"num_experts": 4, "num_experts_per_tok": 2, "moe_intermediate_size": 32,
                                     "shared_expert_intermediate_size": 48}),
    "mixtral": (T.MixtralConfig, {"num_local_experts": 4, "num_experts_per_tok": 2}),
    "gemma": (T.GemmaConfig, {}),
    "gemma2": (T.Gemma2Config, {"sliding_window": 8}),
    "gemma3_text": (T.Gemma3TextConfig, {"sliding_window": 8,
                                         "layer_types": ["sliding_attention", "full_attention", "sliding_attention"]}),
    "phi3": (T.Phi3Config, {}),
}

# What each adapter must find: projection role -> expected (out_features, in_features) on the tiny config.
H, I, Q, KV = 64, 96, 4 * 16, 2 * 16
EXPECTED_ROLES = {
    "dense": {"q": (Q, H), "k": (KV, H), "v": (KV, H), "o": (H, Q), "gate": (I, H), "up": (I, H), "down": (H, I)},
    "phi3": {"qkv": (Q + 2 * KV, H), "o": (H, Q), "gate_up": (2 * I, H), "down": (H, I)},
    "mixtral": {"q": (Q, H), "k": (KV, H), "v": (KV, H), "o": (H, Q)},
    "qwen2_moe": {"q": (Q, H), "k": (KV, H), "v": (KV, H), "o": (H, Q), "gate": (48, H), "up": (48, H),
                  "down": (H, 48)},
}


def tiny_config(arch: str, **overrides):
    cls, extra = TINY[arch]
    return cls(**{**COMMON, **extra, **overrides})


def tiny_model(arch: str = "llama", seed: int = 0, **overrides) -> torch.nn.Module:
    torch.manual_seed(seed)
    return T.AutoModelForCausalLM.from_config(tiny_config(arch, **overrides)).eval()


def tiny_tokenizer(vocab_size: int = 300):
    """A byte-level BPE tokenizer trained on a few sentences: offline, deterministic, tiny."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<pad>", "<s>", "</s>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    text = ["The quick brown fox jumps over the lazy dog. " * 4, "Sparse models run fast on tensor cores.",
            " = Robert Boulter = \n Robert Boulter is an English film , television and theatre actor ."]
    tok.train_from_iterator(text, trainer)
    return T.PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def save_tiny(path: Path, arch: str = "llama", seed: int = 0) -> Path:
    """A complete local model folder (config, safetensors weights, tokenizer)."""
    tok = tiny_tokenizer()
    model = tiny_model(arch, seed, vocab_size=len(tok))
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path
