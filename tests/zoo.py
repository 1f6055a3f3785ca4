"""Tiny random models of every registry architecture, built locally (no downloads).

Each comes with a character-level tokenizer, so prompts are real text. Some configs are pushed
to exercise the awkward paths: a small soft-cap, biased unembeddings, untied weights.
"""

from __future__ import annotations

import contextlib
import string
from functools import lru_cache
from typing import Iterator

import torch
import transformers as T
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from lens_widget import HookedModel, JacobianLens
from lens_widget.decoders import Decoder

VOCAB = 101
_C = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, intermediate_size=64, max_position_embeddings=64)
_C_KV = dict(_C, num_key_value_heads=2)

CONFIGS = {
    "gpt2": lambda: T.GPT2Config(vocab_size=VOCAB, n_embd=32, n_layer=3, n_head=4, n_positions=64),
    "gptj": lambda: T.GPTJConfig(vocab_size=VOCAB, n_embd=32, n_layer=3, n_head=4, n_positions=64, rotary_dim=4),
    "gpt_neo": lambda: T.GPTNeoConfig(vocab_size=VOCAB, hidden_size=32, num_layers=3, num_heads=4, attention_types=[[["global", "local"], 1], [["global"], 1]], max_position_embeddings=64),
    "gpt_neox": lambda: T.GPTNeoXConfig(**_C),
    "gpt_neox_seq": lambda: T.GPTNeoXConfig(**_C, use_parallel_residual=False),
    "opt": lambda: T.OPTConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4, ffn_dim=64, max_position_embeddings=64, word_embed_proj_dim=32),
    "bloom": lambda: T.BloomConfig(vocab_size=VOCAB, hidden_size=32, n_layer=3, n_head=4),
    "falcon": lambda: T.FalconConfig(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=3, num_attention_heads=4),
    "llama": lambda: T.LlamaConfig(**_C),
    "llama_untied_bias": lambda: T.LlamaConfig(**_C_KV, tie_word_embeddings=False, attention_bias=True, mlp_bias=True),
    "mistral": lambda: T.MistralConfig(**_C_KV),
    "mixtral": lambda: T.MixtralConfig(**_C_KV, num_local_experts=2, num_experts_per_tok=1),
    "qwen2": lambda: T.Qwen2Config(**_C_KV),
    "qwen3": lambda: T.Qwen3Config(**_C_KV, head_dim=8),
    "gemma": lambda: T.GemmaConfig(**_C_KV, head_dim=8),
    "gemma2": lambda: T.Gemma2Config(**_C_KV, head_dim=8, final_logit_softcapping=0.5),
    "gemma3_text": lambda: T.Gemma3TextConfig(**_C_KV, head_dim=8, final_logit_softcapping=0.7),
    "phi": lambda: T.PhiConfig(**_C),
    "phi3": lambda: T.Phi3Config(**_C_KV, pad_token_id=0),
    "stablelm": lambda: T.StableLmConfig(**_C_KV, partial_rotary_factor=0.5),
    "olmo": lambda: T.OlmoConfig(**_C_KV, pad_token_id=0),
    "olmo2": lambda: T.Olmo2Config(**_C_KV, pad_token_id=0),
}

# Block outputs of these are sequential (attention then MLP), so resid_mid exists.
SEQUENTIAL = {"gpt2", "gpt_neo", "gpt_neox_seq", "opt", "bloom", "llama", "llama_untied_bias", "mistral", "mixtral", "qwen2", "qwen3", "gemma", "gemma2", "gemma3_text", "phi3", "stablelm", "olmo", "olmo2"}


@lru_cache(maxsize=1)
def char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per printable ASCII character (ids 1..), id 0 = <unk>."""
    chars = [c for c in string.printable if c not in "\x0b\x0c"]
    vocab = {"<unk>": 0}
    for c in chars:
        vocab.setdefault(c, len(vocab))
    assert len(vocab) <= VOCAB
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(pattern="", behavior="isolated")
    return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", pad_token="<unk>")


@lru_cache(maxsize=None)
def tiny(arch: str, seed: int = 0, vocab: int = VOCAB) -> HookedModel:
    """A tiny random model of ``arch`` (cached; treat as read-only). ``vocab`` > ``VOCAB`` adds
    rows the character tokenizer never produces (e.g. a multiple of the top-k block, 64)."""
    torch.manual_seed(seed)
    config = CONFIGS[arch]()
    config.vocab_size = vocab
    model = T.AutoModelForCausalLM.from_config(config, attn_implementation="eager")
    with torch.no_grad():
        # Larger weights than the default init make layers disagree and soft-caps bite.
        for p in model.parameters():
            if p.dim() >= 2:
                p.mul_(4.0)
        head = model.get_output_embeddings()
        if getattr(head, "bias", None) is not None:
            head.bias.normal_()
    return HookedModel.from_model(model.eval(), char_tokenizer(), name=f"tiny-{arch}")


class AffineLens(Decoder):
    """A stand-in for the tuned lens in widget tests: a fixed random affine map before the final norm."""

    name = "tuned lens"

    def __init__(self, model: HookedModel, seed: int = 1):
        super().__init__(model)
        g = torch.Generator().manual_seed(seed)
        d = model.model.config.hidden_size
        self.w = torch.randn(d, d, generator=g) * 0.5
        self.b = torch.randn(d, generator=g)

    def translate(self, h: torch.Tensor, site: str | None) -> torch.Tensor:
        return h + h @ self.w.to(h) + self.b.to(h)


def jittered_lens(hm: HookedModel, seed: int = 5) -> JacobianLens:
    """A J lens of random matrices near the identity (``I + 0.3 N(0, 1)``) at the embeddings and
    every block output but the last: the same matrices on every device for a seed."""
    d = hm.model.config.hidden_size
    g = torch.Generator().manual_seed(seed)
    jac = {i: torch.eye(d) + 0.3 * torch.randn(d, d, generator=g) for i in range(hm.num_layers - 1)}
    jac["embed"] = torch.eye(d) + 0.3 * torch.randn(d, d, generator=g)
    return JacobianLens(hm, jac)


@contextlib.contextmanager
def counted_forwards(hm: HookedModel) -> Iterator[list[int]]:
    """A list that gets one entry per forward pass of ``hm``'s model while the block runs."""
    calls: list[int] = []
    handle = hm.model.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        yield calls
    finally:
        handle.remove()
