"""The model precisions a user can name, once: the table from name to torch dtype, and the `dtype` option the
`lipsync` command, the UNet loader node, the presets and the experiment file offer (`auto`: the device's)."""
from __future__ import annotations

import torch

from .options import Option

DTYPES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
DTYPE = Option("dtype", "auto", "Model precision; auto is fp16 on CUDA, fp32 on the CPU.", choices=("auto", *DTYPES))
