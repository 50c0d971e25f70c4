"""The whisper audio encoder LatentSync conditions on, and the loader for openai's checkpoint files.

Only the encoder half of whisper is used: it turns 30 s of log-mel into 1500 time steps, and LatentSync
takes its hidden states (not its final output) as the UNet's cross-attention context. Parameter names
follow openai-whisper's `encoder.*` state dict so that the official `tiny.pt` loads unchanged.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from ..catalogue import CATALOGUE
from ..checkpoint import CheckpointError, describe, read_checkpoint
from ..core.options import Option
from ..core.precision import DTYPE

WHISPER_TINY_HINT = CATALOGUE["whisper"].where_to_get()
PRECISION = Option("precision", DTYPE.default, "Encoder precision; auto is fp16 on GPU (as the reference), fp32 on CPU.",
                   choices=DTYPE.choices)


class WhisperCheckpointError(CheckpointError):
    """The file is not a usable openai-whisper checkpoint; the message says what it looks like instead."""


@dataclass(frozen=True)
class EncoderDims:
    """The audio half of openai-whisper's `ModelDimensions` (tiny: 80 mels, 1500 steps, 384 wide, 6 heads, 4 layers)."""

    n_mels: int = 80
    n_audio_ctx: int = 1500
    n_audio_state: int = 384
    n_audio_head: int = 6
    n_audio_layer: int = 4


TINY = EncoderDims()


def sinusoids(length: int, channels: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's fixed positional embedding: sines in the first half of the channels, cosines in the second."""
    if channels % 2:
        raise ValueError(f"channels must be even, got {channels}")
    increment = math.log(max_timescale) / (channels // 2 - 1)
    inv_timescales = torch.exp(-increment * torch.arange(channels // 2, dtype=torch.float32))
    angles = torch.arange(length, dtype=torch.float32)[:, None] * inv_timescales[None, :]
    return torch.cat([torch.sin(angles), torch.cos(angles)], dim=1)


class LayerNorm(nn.LayerNorm):
    """Normalises in float32 even when the model runs in half precision, as whisper does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.float()).type(x.dtype)


class MultiHeadAttention(nn.Module):
    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.n_head = n_head
        self.query = nn.Linear(n_state, n_state)
        self.key = nn.Linear(n_state, n_state, bias=False)
        self.value = nn.Linear(n_state, n_state)
        self.out = nn.Linear(n_state, n_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, steps, width = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, steps, self.n_head, width // self.n_head).transpose(1, 2)

        attended = F.scaled_dot_product_attention(heads(self.query(x)), heads(self.key(x)), heads(self.value(x)))
        return self.out(attended.transpose(1, 2).reshape(batch, steps, width))


class ResidualAttentionBlock(nn.Module):
    """Pre-norm transformer block: self-attention, then a 4x-wide GELU MLP, each added back."""

    def __init__(self, n_state: int, n_head: int):
        super().__init__()
        self.attn = MultiHeadAttention(n_state, n_head)
        self.attn_ln = LayerNorm(n_state)
        self.mlp = nn.Sequential(nn.Linear(n_state, 4 * n_state), nn.GELU(), nn.Linear(4 * n_state, n_state))
        self.mlp_ln = LayerNorm(n_state)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.attn_ln(x))
        return x + self.mlp(self.mlp_ln(x))


class WhisperEncoder(nn.Module):
    """Whisper's `AudioEncoder`, returning every hidden state the way LatentSync uses them."""

    def __init__(self, dims: EncoderDims = TINY):
        super().__init__()
        self.dims = dims
        self.conv1 = nn.Conv1d(dims.n_mels, dims.n_audio_state, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(dims.n_audio_state, dims.n_audio_state, kernel_size=3, stride=2, padding=1)
        self.register_buffer("positional_embedding", sinusoids(dims.n_audio_ctx, dims.n_audio_state))
        self.blocks = nn.ModuleList(
            ResidualAttentionBlock(dims.n_audio_state, dims.n_audio_head) for _ in range(dims.n_audio_layer))
        # Never applied (LatentSync skips it), but part of the checkpoint, so kept for a strict load.
        self.ln_post = LayerNorm(dims.n_audio_state)

    @property
    def span_frames(self) -> int:
        """Log-mel frames (100 per second) in one encoder span: 3000, i.e. 30 s."""
        return 2 * self.dims.n_audio_ctx

    def forward(self, mel: torch.Tensor) -> torch.Tensor:
        """`mel` `[B, n_mels, 3000]` -> hidden states `[B, 1500, n_layer + 1, width]`.

        State 0 is the input to the first block (convolutions plus positional embedding); state k is the
        output of block k. `ln_post` is not applied: LatentSync was trained on these raw states.
        """
        if mel.shape[1:] != (self.dims.n_mels, self.span_frames):
            raise ValueError(f"expected log-mel spans [B, {self.dims.n_mels}, {self.span_frames}], "
                             f"got {tuple(mel.shape)}")
        x = F.gelu(self.conv1(mel))
        x = F.gelu(self.conv2(x)).transpose(1, 2)
        x = x + self.positional_embedding.to(x.dtype)
        states = [x]
        for block in self.blocks:
            x = block(x)
            states.append(x)
        return torch.stack(states, dim=2)


def load_whisper_encoder(path: str | Path, device: str | torch.device = "cpu",
                         dtype: torch.dtype = torch.float32) -> WhisperEncoder:
    """Load the encoder from an official openai-whisper checkpoint (`{"dims": ..., "model_state_dict": ...}`).

    Only `encoder.*` tensors are used and they must match the architecture exactly; the decoder is
    ignored. Any whisper size loads; the released LatentSync models need tiny (width 384).
    """
    path = Path(path)
    checkpoint = read_checkpoint(path, "openai's whisper .pt file", WHISPER_TINY_HINT, error=WhisperCheckpointError)
    dims, state = _split_official(checkpoint, path)
    encoder = WhisperEncoder(dims)
    _load_strict(encoder, state, path)
    return encoder.to(device=device, dtype=dtype).eval()


def _split_official(checkpoint: object, path: Path) -> tuple[EncoderDims, dict[str, torch.Tensor]]:
    if not isinstance(checkpoint, dict):
        raise WhisperCheckpointError(f"{path} holds a {type(checkpoint).__name__}, not a whisper checkpoint "
                                     f"dict. {WHISPER_TINY_HINT}")
    if "dims" not in checkpoint or "model_state_dict" not in checkpoint:
        raise WhisperCheckpointError(f"{path} holds {describe(checkpoint)}, not an openai-whisper checkpoint "
                                     f"(which has 'dims' and 'model_state_dict'). {WHISPER_TINY_HINT}")
    raw_dims, state = checkpoint["dims"], checkpoint["model_state_dict"]
    fields = EncoderDims.__dataclass_fields__
    try:
        dims = EncoderDims(**{name: int(raw_dims[name]) for name in fields})
    except (KeyError, TypeError, ValueError) as exc:
        raise WhisperCheckpointError(f"{path}: 'dims' lacks the audio dimensions {sorted(fields)}: "
                                     f"{raw_dims!r}") from exc
    if not isinstance(state, dict):
        raise WhisperCheckpointError(f"{path}: 'model_state_dict' is a {type(state).__name__}, not a dict")
    encoder_state = {k[len("encoder."):]: v for k, v in state.items() if k.startswith("encoder.")}
    if not encoder_state:
        raise WhisperCheckpointError(f"{path} has 'dims' but its model_state_dict holds {describe(state)}, "
                                     f"with no encoder.* tensors. {WHISPER_TINY_HINT}")
    return dims, encoder_state


def _load_strict(encoder: WhisperEncoder, state: dict[str, torch.Tensor], path: Path) -> None:
    expected = encoder.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong_shape = sorted(f"{k} {tuple(state[k].shape)} (expected {tuple(v.shape)})"
                         for k, v in expected.items() if k in state and state[k].shape != v.shape)
    if missing or unexpected or wrong_shape:
        problems = [f"{label}: {', '.join('encoder.' + n for n in names[:5])}"
                    + (f" and {len(names) - 5} more" if len(names) > 5 else "")
                    for label, names in (("missing", missing), ("unexpected", unexpected),
                                         ("wrong shape", wrong_shape)) if names]
        raise WhisperCheckpointError(f"{path}: the encoder tensors do not match the whisper architecture its "
                                     f"'dims' describe ({encoder.dims}); " + "; ".join(problems))
    encoder.load_state_dict({k: v.float() for k, v in state.items()}, strict=True)
