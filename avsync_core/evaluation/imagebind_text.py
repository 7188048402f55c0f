"""ImageBind's text branch and its BPE tokenizer: the IT (image-text) similarity of the paper's table.

Only the text tensors (``modality_*.text.*``) are read from ``imagebind_huge.pth``, memory-mapped. The branch, as
ImageBind builds it (imagebind_huge: width 1024, 24 blocks, 16 heads, out 1024): token embedding + learned
position embedding over 77 tokens, pre-norm blocks (``nn.MultiheadAttention`` with a causal mask, exact-GELU MLP,
LayerNorms eps 1e-6, no LayerNorm before the blocks), then the head takes the token at the end-of-text position
(the largest token id), LayerNorm (eps 1e-6) and a bias-free Linear. The postprocessor L2-normalises and
multiplies by clip(exp(log_logit_scale), max=100); the official ``encode_text`` divides that factor out again.

Tokens are CLIP's BPE (``<start>`` 49406, text, ``<end>`` 49407, zero padding to 77, truncated to keep the end
token), from open_clip_torch's ``SimpleTokenizer``, which ships the same ``bpe_simple_vocab_16e6`` vocabulary
ImageBind uses; it is imported only when text is tokenized.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..audio.imagebind.model import Mlp
from ..checkpoints import load_strict, read_safetensors_metadata, read_state_dict
from ..errors import CheckpointError, InvalidInputError
from .imagebind import is_branch_key

CONTEXT_LENGTH = 77
MAX_LOGIT_SCALE = 100.0
TEXT_HEADS_METADATA = "text_heads"
_NORM_EPS = 1e-6
_PREFIX_NAMES = {
    "modality_preprocessors.text.token_embedding.weight": "token_embedding.weight",
    "modality_preprocessors.text.pos_embed": "pos_embed",
    "modality_heads.text.proj.0.weight": "head_norm.weight",
    "modality_heads.text.proj.0.bias": "head_norm.bias",
    "modality_heads.text.proj.1.weight": "head_proj.weight",
    "modality_postprocessors.text.1.log_logit_scale": "log_logit_scale",
}
_BLOCKS = "modality_trunks.text.blocks."
_BUILT_MASK = "modality_preprocessors.text.mask"  # the causal mask buffer: rebuilt here, not read


def tokenize(texts: Sequence[str], context_length: int = CONTEXT_LENGTH) -> torch.Tensor:
    """Class names -> (n, context_length) int64 CLIP BPE tokens, as ImageBind's ``load_and_transform_text``."""
    if isinstance(texts, str) or not all(isinstance(t, str) for t in texts):
        raise InvalidInputError(f"Texts must be a list of strings, got {texts!r}.")
    return _tokenizer(context_length)(list(texts)).long()


@functools.cache
def _tokenizer(context_length: int):
    """open_clip's tokenizer (reading the BPE merges takes a second, so it is built once per length)."""
    try:
        from open_clip.tokenizer import SimpleTokenizer
    except ImportError:
        raise InvalidInputError(
            "IT needs ImageBind's BPE tokenizer from open_clip_torch: pip install 'open_clip_torch>=2.20'."
        ) from None
    return SimpleTokenizer(context_length=context_length)


class _Block(nn.Module):
    def __init__(self, dim: int, heads: int, hidden: int) -> None:
        super().__init__()
        self.norm_1 = nn.LayerNorm(dim, eps=_NORM_EPS)
        self.attn = nn.MultiheadAttention(dim, heads, bias=True, batch_first=True)
        self.norm_2 = nn.LayerNorm(dim, eps=_NORM_EPS)
        self.mlp = Mlp(dim, hidden)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        h = self.norm_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=mask)[0]
        return x + self.mlp(self.norm_2(x))


class ImageBindTextEncoder(nn.Module):
    """Tokens (b, 77) -> unit-length ImageBind text embeddings (b, out_dim), the official ``encode_text``."""

    def __init__(
        self, width: int, depth: int, heads: int, out_dim: int, vocab: int = 49408, context: int = CONTEXT_LENGTH
    ) -> None:
        super().__init__()
        if width % heads:
            raise InvalidInputError(f"Text width {width} is not divisible by {heads} heads.")
        self.token_embedding = nn.Embedding(vocab, width)
        self.pos_embed = nn.Parameter(torch.zeros(1, context, width))
        self.blocks = nn.ModuleList(_Block(width, heads, 4 * width) for _ in range(depth))
        self.head_norm = nn.LayerNorm(width, eps=_NORM_EPS)
        self.head_proj = nn.Linear(width, out_dim, bias=False)
        self.log_logit_scale = nn.Parameter(torch.zeros(()))
        self.eval()

    @property
    def device(self) -> torch.device:
        return self.head_proj.weight.device

    @property
    def context_length(self) -> int:
        return self.pos_embed.shape[1]

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        if tokens.ndim != 2 or tokens.shape[1] != self.context_length or tokens.is_floating_point():
            raise InvalidInputError(
                f"ImageBind's text branch takes token ids shaped (batch, {self.context_length}), got "
                f"{tuple(tokens.shape)} {tokens.dtype}; use tokenize()."
            )
        tokens = tokens.to(self.device)
        n = self.context_length
        mask = torch.full((n, n), float("-inf"), device=self.device).triu_(1)
        x = self.token_embedding(tokens) + self.pos_embed
        for block in self.blocks:
            x = block(x, mask)
        x = x[torch.arange(x.shape[0], device=x.device), tokens.argmax(dim=-1)]
        scale = self.log_logit_scale.exp().clamp(max=MAX_LOGIT_SCALE)
        return F.normalize(self.head_proj(self.head_norm(x)), dim=-1) * scale / scale  # the official rounding

    def encode(self, texts: Sequence[str]) -> torch.Tensor:
        return self(tokenize(texts, self.context_length))

    @classmethod
    def from_state_dict(
        cls, tensors: Mapping[str, torch.Tensor], source: str, heads: int | None = None
    ) -> ImageBindTextEncoder:
        """From ImageBind-named tensors (``modality_*.text.*``); other modalities are ignored."""
        state: dict[str, torch.Tensor] = {}
        for key, value in tensors.items():
            if key in _PREFIX_NAMES:
                state[_PREFIX_NAMES[key]] = value
            elif key.startswith(_BLOCKS):
                state["blocks." + key[len(_BLOCKS) :]] = value
            elif is_branch_key(key, "text") and key != _BUILT_MASK:
                state[key] = value  # reported as unexpected below
        try:
            vocab, width = state["token_embedding.weight"].shape
            context = state["pos_embed"].shape[1]
            out_dim = state["head_proj.weight"].shape[0]
            depth = 1 + max(int(k.split(".")[1]) for k in state if k.startswith("blocks."))
        except (KeyError, ValueError, IndexError) as exc:
            raise CheckpointError(
                f"{source} has no complete ImageBind text branch (missing {exc}); IT needs imagebind_huge.pth."
            ) from None
        heads = heads or max(width // 64, 1)
        with torch.device("meta"):
            model = cls(width, depth, heads, out_dim, vocab, context)
        state = {k: v.float() for k, v in state.items()}
        load_strict(model, state, source, f"the weights of a {depth}-block, {width}-wide ImageBind text branch")
        return model.requires_grad_(False).eval()

    @classmethod
    def from_file(cls, path: str | os.PathLike, heads: int | None = None) -> ImageBindTextEncoder:
        """imagebind_huge.pth (only the text tensors are read, memory-mapped) or a .safetensors with those keys.

        The head count is not in ImageBind's weights: a safetensors file may carry it as ``text_heads`` metadata;
        otherwise it is width / 64, imagebind_huge's (16 heads at width 1024).
        """
        p = Path(os.fspath(path))
        if not p.is_file():
            raise CheckpointError(f"ImageBind checkpoint not found: {p} (IT needs imagebind_huge.pth).")
        if heads is None and p.suffix == ".safetensors":
            stored = read_safetensors_metadata(p).get(TEXT_HEADS_METADATA)
            heads = int(stored) if stored and stored.isdigit() else None
        return cls.from_state_dict(read_state_dict(p, lambda key: is_branch_key(key, "text")), str(p), heads)
