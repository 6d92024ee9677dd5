"""Tiny randomly initialised DeepSeek-architecture models and a tokenizer built offline.

They prove the DeepSeek loading path (config, weights, tokenizer, chat template, int8
quantization, generation) without any real weights: the answers are nonsense by design.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)
SENTENCES = [
    "the quick brown fox jumps over the lazy dog",
    "what is the capital of france ?",
    "paris is the capital of france .",
    "hello world , how are you today ?",
    "cairn answers questions from your own documents",
]
SPECIALS = ["<unk>", "<s>", "</s>", "<pad>", "<|system|>", "<|user|>", "<|assistant|>"]


def build_tokenizer(target: Path) -> int:
    """A word-level tokenizer with a chat template saved in `target`; returns the vocab size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tokenizer = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.decoder = decoders.WordPiece(prefix="##")
    tokenizer.train_from_iterator(SENTENCES, trainers.WordLevelTrainer(special_tokens=SPECIALS))
    wrapper: Any = PreTrainedTokenizerFast
    fast = wrapper(
        tokenizer_object=tokenizer,
        unk_token="<unk>",
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
    )
    fast.chat_template = CHAT_TEMPLATE
    fast.save_pretrained(target)
    return len(fast)


def build_tiny_deepseek(target: Path, architecture: Literal["v2", "v3"] = "v3") -> Path:
    """Save a 2-layer DeepSeek model (one dense layer, one MoE layer with 4 routed experts,
    multi-head latent attention) and its tokenizer in `target`."""
    import torch
    from transformers import AutoModelForCausalLM, DeepseekV2Config, DeepseekV3Config

    vocab = build_tokenizer(target)
    common: dict[str, Any] = {
        "vocab_size": vocab,
        "hidden_size": 64,
        "intermediate_size": 128,
        "moe_intermediate_size": 32,
        "num_hidden_layers": 2,
        "num_attention_heads": 4,
        "num_key_value_heads": 4,
        "n_shared_experts": 1,
        "n_routed_experts": 4,
        "num_experts_per_tok": 2,
        "first_k_dense_replace": 1,
        "kv_lora_rank": 16,
        "q_lora_rank": 32,
        "qk_rope_head_dim": 8,
        "qk_nope_head_dim": 8,
        "v_head_dim": 16,
        "max_position_embeddings": 1024,
        "bos_token_id": 1,
        "eos_token_id": 2,
        "pad_token_id": 3,
    }
    config = (
        DeepseekV3Config(**common, n_group=1, topk_group=1)
        if architecture == "v3"
        else DeepseekV2Config(**common)
    )
    torch.manual_seed(0)
    auto: Any = AutoModelForCausalLM
    model = auto.from_config(config)
    # No end-of-sequence token in generation: a random model could emit it at any step, and the
    # tests need generations that run until they are stopped.
    model.generation_config.eos_token_id = None
    model.save_pretrained(target)
    return target
