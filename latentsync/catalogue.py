"""Every model file the pack uses: what it is, where to get it, where it goes, and its licence.

The loaders' "where to get it" messages, the UNet download, the demo's downloads, the experiment's default
paths and the ComfyUI model folders read this one table. Paths are relative to a ComfyUI `models/` folder.
Nothing here downloads: `unet/files.py` (when the user asks) and the demo script do.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ModelFile:
    key: str
    what: str  # a few words, for messages
    path: str  # where it goes, under ComfyUI's models/ (first folder: the model-folder key the nodes list)
    source: str  # a Hugging Face repository ("owner/name") or a web page, where to get it
    source_file: str  # the file's name there
    licence: str  # as the source states it

    @property
    def folder(self) -> str:
        return self.path.split("/")[0]

    @property
    def url(self) -> str:
        return self.source if "://" in self.source else f"https://huggingface.co/{self.source}"

    def where_to_get(self, models: str | Path = "ComfyUI/models") -> str:
        """One sentence: the file, where to download it, where to put it."""
        return (f"download {self.source_file} from {self.url} ({self.licence} licence) and put it in "
                f"{Path(models) / self.path}")


LATENTSYNC_LICENCE = "openrail++"
CATALOGUE: dict[str, ModelFile] = {m.key: m for m in (
    ModelFile("unet_1.5", "the LatentSync 1.5 UNet (256 px)", "latentsync/1.5/latentsync_unet.pt",
              "ByteDance/LatentSync-1.5", "latentsync_unet.pt", LATENTSYNC_LICENCE),
    ModelFile("unet_1.6", "the LatentSync 1.6 UNet (512 px)", "latentsync/1.6/latentsync_unet.pt",
              "ByteDance/LatentSync-1.6", "latentsync_unet.pt", LATENTSYNC_LICENCE),
    ModelFile("whisper", "openai's whisper tiny, as LatentSync ships it", "whisper/tiny.pt",
              "ByteDance/LatentSync-1.5", "whisper/tiny.pt", "mit"),
    ModelFile("vae", "the SD VAE (sd-vae-ft-mse)", "vae/vae-ft-mse-840000-ema-pruned.safetensors",
              "stabilityai/sd-vae-ft-mse-original", "vae-ft-mse-840000-ema-pruned.safetensors", "mit"),
    ModelFile("syncnet", "the SyncNet evaluation network", "syncnet/syncnet_v2.model",
              "ByteDance/LatentSync-1.5", "auxiliary/syncnet_v2.model", LATENTSYNC_LICENCE),
    ModelFile("s3fd", "the S3FD face detector of the SyncNet evaluation", "syncnet/sfd_face.pth",
              "ByteDance/LatentSync-1.5", "auxiliary/sfd_face.pth", LATENTSYNC_LICENCE),
    ModelFile("insightface", "InsightFace's buffalo_l detector and landmarks",
              "insightface/models/buffalo_l/det_10g.onnx", "https://github.com/deepinsight/insightface",
              "buffalo_l.zip (its model releases)", "non-commercial research"),
    ModelFile("pyannote", "pyannote's segmentation-3.0", "pyannote/segmentation-3.0/pytorch_model.bin",
              "pyannote/segmentation-3.0", "pytorch_model.bin", "mit (gated: accept its terms first)"),
    # Speaker diarization: the 3.1 pipeline's config.yaml names segmentation-3.0 (above) and this embedding.
    ModelFile("diarization", "pyannote's speaker-diarization-3.1 pipeline (its config.yaml)",
              "pyannote/speaker-diarization-3.1/config.yaml", "pyannote/speaker-diarization-3.1", "config.yaml",
              "mit (gated: accept its terms first)"),
    ModelFile("wespeaker", "pyannote's WeSpeaker ResNet34 speaker embedding",
              "pyannote/wespeaker-voxceleb-resnet34-LM/pytorch_model.bin", "pyannote/wespeaker-voxceleb-resnet34-LM",
              "pytorch_model.bin", "cc-by-4.0"),
    ModelFile("upscaler", "Real-ESRGAN x2plus", "upscale_models/RealESRGAN_x2plus.pth",
              "https://github.com/xinntao/Real-ESRGAN", "RealESRGAN_x2plus.pth (its releases)", "bsd-3-clause"),
    # Face restorers for Restore Mouths, in the folder other ComfyUI face-restore packs use.
    ModelFile("gfpgan", "TencentARC's GFPGAN v1.4 face restorer", "facerestore_models/GFPGANv1.4.pth",
              "https://github.com/TencentARC/GFPGAN", "GFPGANv1.4.pth (its v1.3.0 release)", "apache-2.0"),
    ModelFile("codeformer", "sczhou's CodeFormer face restorer", "facerestore_models/codeformer.pth",
              "https://github.com/sczhou/CodeFormer", "codeformer.pth (its v0.1.0 release)",
              "S-Lab License 1.0 (non-commercial)"),
)}

# ComfyUI model-folder key -> sub-folders of models/ that hold it, for the files above that ComfyUI does not
# already know (vae and upscale_models are its own).
MODEL_FOLDERS = {
    "latentsync": ["latentsync"],
    "whisper": ["whisper", os.path.join("latentsync", "whisper")],
    "pyannote": ["pyannote", os.path.join("latentsync", "pyannote")],
    "insightface": ["insightface"],  # buffalo_l lives in insightface/models/buffalo_l/, as other packs expect
    "syncnet": ["syncnet", os.path.join("latentsync", "syncnet")],
    "facerestore_models": ["facerestore_models"],  # shared with other face-restore packs
}


def where_to_get(key: str, models: str | Path = "ComfyUI/models") -> str:
    return CATALOGUE[key].where_to_get(models)
