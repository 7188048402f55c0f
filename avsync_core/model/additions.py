"""The four AVSyncD additions to a Stable Diffusion 1.5 UNet, as host-independent modules.

Frames are folded into the batch everywhere (``(b f) ...``), the layout both diffusers and ComfyUI run their
UNets in, so the same modules serve the standalone model, ComfyUI's own UNet and training. Parameter names are
the official ones (``conv_temp``, ``norm_audio``, ``attn_audio``, ``pos_embedding_temp``, ``norm_temp``,
``attn_temp``; attention projections ``to_q``/``to_k``/``to_v``/``to_out.0``), so official checkpoints load as
they are.

Every layer with weights is built from ``operations`` (see operations.py), so a host can pass layer classes
that cast or stream their weights per call (ComfyUI's ``comfy.ops``) without this library importing the host.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn

from .operations import Operations

Tensor = torch.Tensor


def frame_sinusoid(frames: int, dim: int, device: torch.device | None = None) -> Tensor:
    """cos-first sinusoidal embedding of the frame index (diffusers ``Timesteps(dim, True, 0)``), float32."""
    half = dim // 2
    exponent = -math.log(10000.0) * torch.arange(half, dtype=torch.float32, device=device) / half
    args = torch.arange(frames, device=device).float()[:, None] * torch.exp(exponent)[None, :]
    emb = torch.cat([torch.cos(args), torch.sin(args)], dim=-1)
    if dim % 2:
        emb = F.pad(emb, (0, 1))
    return emb


def frame_group_norm(norm: Callable[[Tensor], Tensor], x: Tensor, frames: int) -> Tensor:
    """Apply a GroupNorm with statistics over all frames of a clip, as the official 5-D resnets do.

    GroupNorm reduces over everything but the batch and the group, so putting the frames next to the height
    gives the 5-D statistics while still calling the host's own norm module (weights, casting, patches).
    """
    y = norm(rearrange(x, "(b f) c h w -> b c (f h) w", f=frames))
    return rearrange(y, "b c (f h) w -> (b f) c h w", f=frames)


class TemporalConvMix(nn.Module):
    """First-frame temporal convolution (``conv_temp``) that follows every convolution of the UNet.

    ``x + Linear(3C -> C)([x_frame0, x_prev, x_cur])`` over channels. The linear map is applied as three 1x1
    convolutions, one per input, with the shared terms computed once: the frame-0 term only on frame 0 and
    the previous-frame term by shifting the per-frame result, which avoids a 3C-wide concatenation.
    """

    def __init__(self, channels: int, zero_init: bool = True, operations: Operations = nn) -> None:
        super().__init__()
        self.conv_temp = operations.Linear(3 * channels, channels)
        if zero_init:
            nn.init.zeros_(self.conv_temp.weight)
            nn.init.zeros_(self.conv_temp.bias)

    def forward(self, x: Tensor, frames: int) -> Tensor:
        if type(self.conv_temp) is not nn.Linear:
            return self._forward_through_layer(x, frames)
        n, c, h, w = x.shape
        b = n // frames
        w_first, w_prev, w_cur = self.conv_temp.weight.split(c, dim=1)
        first = F.conv2d(x.view(b, frames, c, h, w)[:, 0], w_first[:, :, None, None])
        prev_and_cur = F.conv2d(x, torch.cat([w_prev, w_cur])[:, :, None, None], self._bias_pair(c))
        prev, cur = prev_and_cur.view(b, frames, 2, c, h, w).unbind(2)
        prev = torch.cat([prev[:, :1], prev[:, :-1]], dim=1)
        mixed = x.view(b, frames, c, h, w) + (first[:, None] + prev + cur)
        return mixed.view(n, c, h, w)

    def _bias_pair(self, c: int) -> Tensor:
        bias = self.conv_temp.bias
        return torch.cat([bias.new_zeros(c), bias])

    def _forward_through_layer(self, x: Tensor, frames: int) -> Tensor:
        """The same map through the layer's own ``forward`` on the official ``[x_frame0, x_prev, x_cur]``
        concatenation: a host's Linear class may cast or stream its weights per call, so they are not read here."""
        n, c, h, w = x.shape
        clips = x.view(n // frames, frames, c, h, w)
        first = clips[:, :1].expand_as(clips)
        prev = torch.cat([clips[:, :1], clips[:, :-1]], dim=1)
        mixed = self.conv_temp(torch.cat([first, prev, clips], dim=2).movedim(2, -1)).movedim(-1, 2)
        return (clips + mixed).reshape(n, c, h, w)


class Attention(nn.Module):
    """Multi-head attention with the diffusers parameter layout (bias-free q/k/v, ``to_out = [Linear, Dropout]``)."""

    def __init__(self, dim: int, heads: int, context_dim: int | None = None, operations: Operations = nn) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"{dim} channels cannot be split into {heads} heads")
        self.heads = heads
        self.to_q = operations.Linear(dim, dim, bias=False)
        self.to_k = operations.Linear(context_dim or dim, dim, bias=False)
        self.to_v = operations.Linear(context_dim or dim, dim, bias=False)
        self.to_out = nn.ModuleList([operations.Linear(dim, dim), nn.Dropout(0.0)])

    def forward(self, x: Tensor, context: Tensor | None = None, mask: Tensor | None = None) -> Tensor:
        context = x if context is None else context
        out = multi_head_attention(self.to_q(x), self.to_k(context), self.to_v(context), self.heads, mask)
        return self.to_out[1](self.to_out[0](out))


def multi_head_attention(q: Tensor, k: Tensor, v: Tensor, heads: int, mask: Tensor | None = None) -> Tensor:
    """SDPA over ``(batch, tokens, channels)`` projections; ``mask`` is boolean, True = may attend."""
    b, n, c = q.shape
    d = c // heads
    q = q.view(b, n, heads, d).transpose(1, 2)
    k = k.view(b, k.shape[1], heads, d).transpose(1, 2)
    v = v.view(b, v.shape[1], heads, d).transpose(1, 2)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.transpose(1, 2).reshape(b, n, c)


def first_frame_attention(attn: nn.Module, x: Tensor, frames: int) -> Tensor:
    """SD's own ``attn1`` with queries from every frame and keys/values from frame 0 of the same clip.

    All frames of a clip share one key/value set, so the frames are folded into the query length and the
    keys/values are projected once per clip. ``attn`` is any module with ``to_q``, ``to_k``, ``to_v``,
    ``to_out`` and ``heads`` (diffusers' ``Attention`` or ours).
    """
    n, tokens, c = x.shape
    b = n // frames
    q = attn.to_q(x).view(b, frames * tokens, -1)
    x0 = x.view(b, frames, tokens, c)[:, 0]
    out = multi_head_attention(q, attn.to_k(x0), attn.to_v(x0), attn.heads)
    out = out.view(n, tokens, -1)
    return attn.to_out[1](attn.to_out[0](out))


@dataclass
class AudioContext:
    """The audio tokens every transformer block attends to during one UNet call.

    ``tokens`` is ``(clips, L, D)`` (one token set shared by the frames of a clip) or ``(clips, frames, L, D)``;
    ``mask`` is ``(clips, frames, L)`` bool (True = the frame may attend) or None. ``index`` is the mask as a
    gather index (``gather_index``), computed once per mask by the caller; with it, attention only looks at the
    tokens a frame may see, and without it the mask is applied inside attention.
    """

    tokens: Tensor
    frames: int
    mask: Tensor | None = None
    index: Tensor | None = None

    @property
    def clips(self) -> int:
        return self.tokens.shape[0]

    def keys_values(self, to_k: nn.Module, to_v: nn.Module) -> tuple[Tensor, Tensor, Tensor | None]:
        """Project the tokens and lay them out per ``(clip, frame)`` row, with the mask still needed, if any."""
        k, v = to_k(self.tokens), to_v(self.tokens)
        if self.tokens.dim() == 3:
            k, v = k[:, None], v[:, None]
        c = k.shape[-1]
        if self.index is not None:
            idx = self.index[None, :, :, None].expand(self.clips, -1, -1, c)
            k = torch.gather(k.expand(self.clips, self.frames, -1, c), 2, idx)
            v = torch.gather(v.expand(self.clips, self.frames, -1, c), 2, idx)
            mask = None
        else:
            k = k.expand(self.clips, self.frames, -1, c)
            v = v.expand(self.clips, self.frames, -1, c)
            mask = None if self.mask is None else self.mask.reshape(self.clips * self.frames, 1, 1, -1)
        rows = self.clips * self.frames
        return k.reshape(rows, -1, c), v.reshape(rows, -1, c), mask


def gather_index(mask: Tensor) -> Tensor | None:
    """``(frames, K)`` indices of the tokens each frame sees, when all clips of ``mask`` ``(clips, frames, L)``
    share one pattern and every frame sees the same number of tokens (always so for segment masks); else None.

    Gathering K keys per frame replaces masking all L, and gives the same attention output.
    """
    pattern = mask[0]
    if not torch.equal(mask, pattern.expand_as(mask)):
        return None
    counts = pattern.sum(-1)
    if counts.min() != counts.max() or counts.min() == 0:
        return None
    return pattern.nonzero()[:, 1].view(pattern.shape[0], -1)


class FrameIndexEmbedding(nn.Module):
    """``pos_embedding_temp``: MLP over the sinusoidal frame index (diffusers ``TimestepEmbedding`` layout)."""

    def __init__(self, dim: int, operations: Operations = nn) -> None:
        super().__init__()
        self.linear_1 = operations.Linear(dim, dim)
        self.linear_2 = operations.Linear(dim, dim)

    def forward(self, frames: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        emb = frame_sinusoid(frames, self.linear_1.in_features, device).to(dtype)
        return self.linear_2(F.silu(self.linear_1(emb)))


class BlockAdditions(nn.Module):
    """What AVSyncD adds to one SD transformer block: audio cross-attention and temporal self-attention.

    In the block they sit after ``attn1`` (audio) and after ``attn2`` (temporal); SD's own ``attn1`` becomes
    first-frame attention (see ``first_frame_attention``).
    """

    def __init__(
        self, dim: int, heads: int, audio_dim: int, zero_init: bool = True, operations: Operations = nn
    ) -> None:
        super().__init__()
        self.norm_audio = operations.LayerNorm(dim)
        self.attn_audio = Attention(dim, heads, context_dim=audio_dim, operations=operations)
        self.pos_embedding_temp = FrameIndexEmbedding(dim, operations)
        self.norm_temp = operations.LayerNorm(dim)
        self.attn_temp = Attention(dim, heads, operations=operations)
        if zero_init:
            nn.init.zeros_(self.attn_temp.to_out[0].weight)

    def audio_attention(self, x: Tensor, audio: AudioContext) -> Tensor:
        """``x + attn_audio(norm_audio(x))`` with each frame seeing its own audio segment; x is ``((b f), hw, C)``."""
        attn = self.attn_audio
        k, v, mask = audio.keys_values(attn.to_k, attn.to_v)
        out = multi_head_attention(attn.to_q(self.norm_audio(x)), k, v, attn.heads, mask)
        return x + attn.to_out[1](attn.to_out[0](out))

    def temporal_attention(self, x: Tensor, frames: int) -> Tensor:
        """Every spatial position attends across frames; the frame embedding enters only the norm's input."""
        return x + self.temporal_residual(x, frames)

    def temporal_residual(self, x: Tensor, frames: int) -> Tensor:
        """The increment ``attn_temp(norm_temp(x + pos))`` alone, for hosts that add residuals themselves."""
        t = rearrange(x, "(b f) n c -> (b n) f c", f=frames)
        pos = self.pos_embedding_temp(frames, x.dtype, x.device)
        t = self.attn_temp(self.norm_temp(t + pos))
        return rearrange(t, "(b n) f c -> (b f) n c", n=x.shape[1])


def first_frame_resnet(
    x: Tensor,
    emb_out: Tensor | None,
    frames: int,
    *,
    norm1: Callable[[Tensor], Tensor],
    act: Callable[[Tensor], Tensor],
    conv1: Callable[[Tensor], Tensor],
    mix1: TemporalConvMix,
    norm2: Callable[[Tensor], Tensor],
    dropout: Callable[[Tensor], Tensor],
    conv2: Callable[[Tensor], Tensor],
    mix2: TemporalConvMix,
    shortcut: Callable[[Tensor], Tensor] | None = None,
    mix_shortcut: TemporalConvMix | None = None,
) -> Tensor:
    """An SD resnet block with AVSyncD's frame-spanning norms and temporal mixing after each convolution.

    The host's submodules are passed in (diffusers' ``ResnetBlock2D`` parts for ``AVSyncUNet``; ComfyUI keeps its own
    ``ResBlock`` code and gets the same result from shadowed norms and convolutions). ``emb_out`` is the already
    projected timestep embedding, ``(n, C)``.
    """
    h = act(frame_group_norm(norm1, x, frames))
    h = mix1(conv1(h), frames)
    if emb_out is not None:
        h = h + emb_out[:, :, None, None]
    h = act(frame_group_norm(norm2, h, frames))
    h = mix2(conv2(dropout(h)), frames)
    if shortcut is not None:
        x = shortcut(x)
        if mix_shortcut is not None:
            x = mix_shortcut(x, frames)
    return x + h
