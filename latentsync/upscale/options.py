"""What a user sets to upscale and to restore mouths, declared once (`core/options.Option`): the Upscale and
Restore Mouths nodes' inputs and the `upscale` command's flags are made from these, and the library's defaults
are theirs. The precisions are the one table of `core/precision.py`."""
from __future__ import annotations

from ..core.options import Option
from ..core.precision import DTYPE
from .resize import INTERPOLATION_MODES

MAX_SIDE = 16384  # an output side in pixels

METHOD = Option("method", "model", "model: the upscale model below or the one connected; the others interpolate.",
                choices=("model", *INTERPOLATION_MODES))
SCALE = Option("scale", 2.0, "Output size as a multiple of the input size, unless width and height are set.",
               0.05, 16.0, step=0.05)
WIDTH = Option("width", 0, "Exact output width in pixels; 0 = from scale.", 0, MAX_SIDE, step=1)
HEIGHT = Option("height", 0, "Exact output height in pixels; 0 = from scale.", 0, MAX_SIDE, step=1)
TILE = Option("tile", 512, "Tile size in input pixels for the model; halved when memory runs out.", 32, 4096,
              step=32)
OVERLAP = Option("overlap", 32, "Overlap between tiles (input pixels), cross-faded to hide seams.", 0, 256, step=8)
CHUNK = Option("chunk", 8, "Frames on the device at once; memory stays flat however long the clip.", 1, 256)
PRECISION = Option("precision", DTYPE.default, "Model precision; auto is fp16 on GPU, fp32 on CPU.",
                   choices=DTYPE.choices)
RESIZE_MODE = Option("resize_mode", "bicubic", "How a model's result is brought to the requested size, when they "
                     "differ.", choices=INTERPOLATION_MODES)

STRENGTH = Option("strength", 0.7, "How far the mouth moves toward the restored face; 0 runs no restorer (the "
                  "crops are only resized to the output size).", 0.0, 1.0, step=0.05)
FEATHER = Option("feather", 0.03, "Softness of the mouth edge, as a fraction of the crop side.", 0.0, 0.5,
                 step=0.005)
RESTORE_SIZE = Option("size", 0, "Output crop side in pixels; 0 = the larger of the crop side and 512.", 0, 4096,
                      step=8)
RESTORE_CHUNK = Option("chunk", 4, "Crops on the device at once; halved automatically when memory runs out.", 1, 64)
RESTORE_PRECISION = Option("precision", DTYPE.default, "Model precision; auto is fp32 (these models are not "
                           "fp16-safe), bf16 saves memory.", choices=DTYPE.choices)
RESTORE_OPTIONS = (STRENGTH, FEATHER, RESTORE_SIZE, RESTORE_CHUNK, RESTORE_PRECISION)  # Restore Mouths' order
# Restore Mouths' last input (optional: workflows saved before it keep working).
TEMPORAL = Option("temporal", 0.0, "Steadies the restored mouth: each frame's change is averaged with the previous "
                  "frames'; 0 = off.", 0.0, 0.95, step=0.05)
