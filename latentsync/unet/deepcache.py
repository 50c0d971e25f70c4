"""DeepCache for LatentSync's UNet: between full passes, reuse the deep features and run only the shallow end.

Consecutive denoising steps change the UNet's deep features little, so DeepCache (Ma et al., 2023) computes
them only every `interval` steps and reuses them in between. The reference enables it with
`DeepCacheSDHelper(cache_interval=3, cache_branch_id=0)`: steps 0, 3, 6, ... run the whole UNet; the other
steps recompute only `conv_in`, the time embedding and the last layer of the last up block (its resnet fed
with the cached deep feature and the fresh `conv_in` skip, its audio transformer and motion module), then
`conv_norm_out` and `conv_out`. Everything deeper is taken from the last full pass.

`LatentSyncUNet.forward(..., cache=DeepCache)` implements both halves: a full pass stores the input of that
last layer in `cache.features`; a pass with `cache.reuse` set starts from it. The cache belongs to one
window (the features' shape is the window's); `start_window()` clears it, as the reference's step index
restarts at 0 per batch.
"""
from __future__ import annotations

from torch import Tensor


class DeepCache:
    """Which steps of a window run the full UNet, and the deep features carried between them.

    `interval` 0 or 1 runs every step in full (the cache is still filled, which changes nothing);
    `interval` k runs steps 0, k, 2k, ... in full. Counts of both kinds of passes are kept for reports.
    """

    def __init__(self, interval: int = 0):
        if int(interval) != interval or interval < 0:
            raise ValueError(f"DeepCache interval must be a whole number >= 0, got {interval!r}")
        self.interval = int(interval)
        self.features: Tensor | None = None
        self.reuse = False
        self.full_passes = 0
        self.shallow_passes = 0

    @property
    def enabled(self) -> bool:
        return self.interval > 1

    def start_window(self) -> None:
        self.features = None
        self.reuse = False

    def before_step(self, index: int) -> None:
        """Set up the cache for step `index` of the current window and count the pass."""
        self.reuse = self.enabled and self.features is not None and index % self.interval != 0
        if self.reuse:
            self.shallow_passes += 1
        else:
            self.full_passes += 1
