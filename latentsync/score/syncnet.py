"""The SyncNet evaluation network (Chung & Zisserman) behind LSE-C / LSE-D, and its weight loading.

Layer indices and state-dict names follow `syncnet_v2.model` exactly (`netcnnaud.0.weight`, ...), so the
official file loads without renaming. The network maps a 0.2 s snippet of audio (13 MFCCs x 20 steps) and
the matching 5 video frames (224x224, BGR, raw 0-255) to 1024-d embeddings; `metric.py` compares them.
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..catalogue import CATALOGUE
from ..checkpoint import CheckpointError, describe, read_checkpoint

EMBEDDING_DIM = 1024
WHERE_TO_GET = CATALOGUE["syncnet"].where_to_get()


class SyncNetCheckpointError(CheckpointError):
    """A weight file that cannot be the network asked for; the message says what it looks like instead."""


def _conv_bn_relu(conv: nn.Module, channels: int, bn: type[nn.Module]) -> list[nn.Module]:
    return [conv, bn(channels), nn.ReLU(inplace=True)]


class SyncNet(nn.Module):
    """The reference's `S(num_layers_in_fc_layers=1024)`: an audio 2-D CNN and a lip 3-D CNN, each with an MLP."""

    def __init__(self) -> None:
        super().__init__()
        # Sequential indices are part of the file format, pooling layers included.
        self.netcnnaud = nn.Sequential(
            *_conv_bn_relu(nn.Conv2d(1, 64, 3, padding=1), 64, nn.BatchNorm2d),
            nn.MaxPool2d(1, stride=1),
            *_conv_bn_relu(nn.Conv2d(64, 192, 3, padding=1), 192, nn.BatchNorm2d),
            nn.MaxPool2d(3, stride=(1, 2)),
            *_conv_bn_relu(nn.Conv2d(192, 384, 3, padding=1), 384, nn.BatchNorm2d),
            *_conv_bn_relu(nn.Conv2d(384, 256, 3, padding=1), 256, nn.BatchNorm2d),
            *_conv_bn_relu(nn.Conv2d(256, 256, 3, padding=1), 256, nn.BatchNorm2d),
            nn.MaxPool2d(3, stride=2),
            nn.Conv2d(256, 512, (5, 4)), nn.BatchNorm2d(512), nn.ReLU(),
        )
        self.netfcaud = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(),
                                      nn.Linear(512, EMBEDDING_DIM))
        self.netfclip = nn.Sequential(nn.Linear(512, 512), nn.BatchNorm1d(512), nn.ReLU(),
                                      nn.Linear(512, EMBEDDING_DIM))
        self.netcnnlip = nn.Sequential(
            *_conv_bn_relu(nn.Conv3d(3, 96, (5, 7, 7), stride=(1, 2, 2)), 96, nn.BatchNorm3d),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),
            *_conv_bn_relu(nn.Conv3d(96, 256, (1, 5, 5), stride=(1, 2, 2), padding=(0, 1, 1)), 256, nn.BatchNorm3d),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2), padding=(0, 1, 1)),
            *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, nn.BatchNorm3d),
            *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, nn.BatchNorm3d),
            *_conv_bn_relu(nn.Conv3d(256, 256, (1, 3, 3), padding=(0, 1, 1)), 256, nn.BatchNorm3d),
            nn.MaxPool3d((1, 3, 3), stride=(1, 2, 2)),
            *_conv_bn_relu(nn.Conv3d(256, 512, (1, 6, 6)), 512, nn.BatchNorm3d),
        )

    def audio_features(self, mfcc_snippets: torch.Tensor) -> torch.Tensor:
        """`[B, 1, 13, 20]` MFCC snippets -> `[B, 512]` CNN output (before the MLP head)."""
        return self.netcnnaud(mfcc_snippets).flatten(1)

    def video_features(self, frame_snippets: torch.Tensor) -> torch.Tensor:
        """`[B, 3, 5, 224, 224]` BGR 0-255 snippets -> `[B, 512]` CNN output (before the MLP head)."""
        return self.netcnnlip(frame_snippets).flatten(1)

    def forward_audio(self, mfcc_snippets: torch.Tensor) -> torch.Tensor:
        """The reference's `forward_aud`: `[B, 1, 13, 20]` -> `[B, 1024]`, not normalised."""
        return self.netfcaud(self.audio_features(mfcc_snippets))

    def forward_video(self, frame_snippets: torch.Tensor) -> torch.Tensor:
        """The reference's `forward_lip`: `[B, 3, 5, 224, 224]` BGR 0-255 -> `[B, 1024]`, not normalised."""
        return self.netfclip(self.video_features(frame_snippets))


# Prefixes of wrapped state dicts (SyncNetEval's `__S__`, DataParallel's `module`).
_WRAPPER_PREFIXES = ("__S__.", "module.")


def _strip_wrapper(key: str) -> str:
    for prefix in _WRAPPER_PREFIXES:
        if key.startswith(prefix):
            return key[len(prefix):]
    return key


def read_state_dict(path: str | Path, where_to_get: str) -> dict[str, torch.Tensor]:
    """A plain state dict read as the reference does (`torch.load(weights_only=True)`), or a .safetensors file.

    A wrapper prefix (`__S__.`, as `SyncNetEval().state_dict()` would write, or `module.`) is removed.
    """
    path = Path(path)
    obj = read_checkpoint(path, "a plain state dict of names to tensors", where_to_get, error=SyncNetCheckpointError)
    if not isinstance(obj, dict) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise SyncNetCheckpointError(f"{path} holds {describe(obj)}; {where_to_get}")
    return {_strip_wrapper(str(k)): v for k, v in obj.items()}


def check_state_dict(state: dict[str, torch.Tensor], model: nn.Module, path: str | Path, what: str,
                     where_to_get: str, optional_suffixes: tuple[str, ...] = ()) -> None:
    """Raise `SyncNetCheckpointError` unless `state` has exactly the model's keys and shapes.

    Keys ending in one of `optional_suffixes` may be absent (they keep the module's value).
    """
    expected = model.state_dict()
    unexpected = sorted(set(state) - set(expected))
    missing = sorted(k for k in set(expected) - set(state) if not k.endswith(optional_suffixes))
    if unexpected or missing:
        looks_like = describe(state)
        detail = []
        if missing:
            detail.append(f"{len(missing)} missing (e.g. {missing[0]})")
        if unexpected:
            detail.append(f"{len(unexpected)} unexpected (e.g. {unexpected[0]})")
        raise SyncNetCheckpointError(f"{path} is not {what}: it looks like {looks_like}; keys: "
                                     f"{', '.join(detail)}. {where_to_get[0].upper()}{where_to_get[1:]}")
    wrong = [(k, tuple(v.shape), tuple(expected[k].shape)) for k, v in state.items()
             if tuple(v.shape) != tuple(expected[k].shape)]
    if wrong:
        key, got, want = wrong[0]
        raise SyncNetCheckpointError(f"{path} is not {what}: {len(wrong)} tensors have the wrong shape "
                                     f"(e.g. {key}: {got}, expected {want})")


def load_syncnet(path: str | Path, device: str | torch.device = "cpu") -> SyncNet:
    """Build `SyncNet` from `syncnet_v2.model` (a plain state dict), strictly, in eval mode on `device`.

    Only the `num_batches_tracked` counters may be missing (eval never reads them); every other key and
    shape must match, unlike the reference loader, which silently keeps random values for missing keys.
    """
    state = read_state_dict(path, WHERE_TO_GET)
    model = SyncNet()
    check_state_dict(state, model, path, "a SyncNet (syncnet_v2.model)", WHERE_TO_GET,
                     optional_suffixes=("num_batches_tracked",))
    model.load_state_dict(state, strict=False)
    return model.to(device).eval()
