"""Model files in the official formats, written by the tests and the benchmarks with random (or golden) weights.

The product code loads these through its real loading path; nothing here is used by the pack itself.
"""
from __future__ import annotations

from pathlib import Path

import torch

from latentsync.audio.whisper import WhisperEncoder

TINY_DIMS = {"n_mels": 80, "n_audio_ctx": 1500, "n_audio_state": 384, "n_audio_head": 6, "n_audio_layer": 4,
             "n_vocab": 51865, "n_text_ctx": 448, "n_text_state": 384, "n_text_head": 6, "n_text_layer": 4}


def decoder_placeholders() -> dict[str, torch.Tensor]:
    """The official file's decoder keys and shapes; values do not matter (stride-0 views keep the file small)."""
    shapes = {"decoder.token_embedding.weight": (51865, 384), "decoder.positional_embedding": (448, 384),
              "decoder.ln.weight": (384,), "decoder.ln.bias": (384,)}
    for i in range(4):
        for attn in ("attn", "cross_attn"):
            for name, shape in (("query.weight", (384, 384)), ("query.bias", (384,)), ("key.weight", (384, 384)),
                                ("value.weight", (384, 384)), ("value.bias", (384,)), ("out.weight", (384, 384)),
                                ("out.bias", (384,))):
                shapes[f"decoder.blocks.{i}.{attn}.{name}"] = shape
            shapes[f"decoder.blocks.{i}.{attn}_ln.weight"] = shapes[f"decoder.blocks.{i}.{attn}_ln.bias"] = (384,)
        for name, shape in (("mlp.0.weight", (1536, 384)), ("mlp.0.bias", (1536,)), ("mlp.2.weight", (384, 1536)),
                            ("mlp.2.bias", (384,)), ("mlp_ln.weight", (384,)), ("mlp_ln.bias", (384,))):
            shapes[f"decoder.blocks.{i}.{name}"] = shape
    return {key: torch.zeros((), dtype=torch.float16).expand(shape) for key, shape in shapes.items()}


def write_whisper_checkpoint(path: Path, encoder_state: dict[str, torch.Tensor] | None = None,
                             seed: int = 0) -> Path:
    """An openai-whisper `tiny.pt` (`{"dims", "model_state_dict"}`); random encoder weights unless given."""
    if encoder_state is None:
        torch.manual_seed(seed)
        encoder_state = {f"encoder.{k}": v for k, v in WhisperEncoder().state_dict().items()}
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"dims": TINY_DIMS, "model_state_dict": {**encoder_state, **decoder_placeholders()}}, path)
    return path


def write_pyannote_segmentation(path: Path, seed: int = 0) -> Path:
    """A random-weight PyanNet with pyannote/segmentation-3.0's hyper-parameters (SincNet stride 10,
    4x128 BiLSTM, 2x128 linear, powerset of 3 speakers with at most 2 at once over 10 s chunks), saved the
    way pyannote's training writes `pytorch_model.bin` (state dict, hyper-parameters, pyannote block)."""
    from latentsync.audio.vad_pyannote import telemetry_off
    from latentsync.core.process_state import contained

    # contained: importing pyannote (and Lightning) here would otherwise change this test process's environment
    # for every later test, and for the fresh Pythons they start.
    with telemetry_off(), contained():
        from pyannote.audio.core.task import Problem, Resolution, Specifications
        from pyannote.audio.models.segmentation import PyanNet

        torch.manual_seed(seed)
        model = PyanNet(sincnet={"stride": 10},
                        lstm={"hidden_size": 128, "num_layers": 4, "bidirectional": True, "monolithic": True,
                              "dropout": 0.0},
                        linear={"hidden_size": 128, "num_layers": 2}, sample_rate=16000, num_channels=1)
        model.specifications = Specifications(
            problem=Problem.MONO_LABEL_CLASSIFICATION, resolution=Resolution.FRAME, duration=10.0,
            min_duration=10.0, warm_up=(0.0, 0.0), classes=["speaker#1", "speaker#2", "speaker#3"],
            powerset_max_classes=2, permutation_invariant=True)
        model.setup()
        checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                      "pytorch-lightning_version": "2.6.6"}
        model.on_save_checkpoint(checkpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


# pyannote/speaker-diarization-3.1's config.yaml: its structure and published parameters.
DIARIZATION_3_1_CONFIG = """\
version: 3.1.0

pipeline:
  name: pyannote.audio.pipelines.SpeakerDiarization
  params:
    clustering: AgglomerativeClustering
    embedding: pyannote/wespeaker-voxceleb-resnet34-LM
    embedding_batch_size: 32
    embedding_exclude_overlap: true
    segmentation: pyannote/segmentation-3.0
    segmentation_batch_size: 32

params:
  clustering:
    method: centroid
    min_cluster_size: 12
    threshold: 0.7045654963945799
  segmentation:
    min_duration_off: 0.0
"""


def write_pyannote_embedding(path: Path, seed: int = 0) -> Path:
    """A random-weight WeSpeaker ResNet34 in the format of pyannote/wespeaker-voxceleb-resnet34-LM's
    `pytorch_model.bin`: a pyannote Model checkpoint (state dict, hyper-parameters, and the pyannote block with a
    chunk-level representation task, as pyannote's WeSpeaker conversion script writes it)."""
    from latentsync.audio.vad_pyannote import telemetry_off
    from latentsync.core.process_state import contained

    with telemetry_off(), contained():  # see write_pyannote_segmentation
        from pyannote.audio.core.task import Problem, Resolution, Specifications
        from pyannote.audio.models.embedding import WeSpeakerResNet34

        torch.manual_seed(seed)
        model = WeSpeakerResNet34()
        model.specifications = Specifications(problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK,
                                              duration=5.0)
        model.setup()
        checkpoint = {"state_dict": model.state_dict(), "hyper_parameters": dict(model.hparams),
                      "pytorch-lightning_version": "2.6.6"}
        model.on_save_checkpoint(checkpoint)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(checkpoint, path)
    return path


def write_pyannote_diarization(folder: Path, seed: int = 0) -> Path:
    """pyannote/speaker-diarization-3.1 laid out as the pack expects under `folder` (a `models/pyannote/`):
    `speaker-diarization-3.1/config.yaml` beside the two models it names, `segmentation-3.0/pytorch_model.bin`
    and `wespeaker-voxceleb-resnet34-LM/pytorch_model.bin`, with random weights. Returns the config's folder."""
    write_pyannote_segmentation(folder / "segmentation-3.0" / "pytorch_model.bin", seed=seed)
    write_pyannote_embedding(folder / "wespeaker-voxceleb-resnet34-LM" / "pytorch_model.bin", seed=seed)
    pipeline = folder / "speaker-diarization-3.1"
    pipeline.mkdir(parents=True, exist_ok=True)
    (pipeline / "config.yaml").write_text(DIARIZATION_3_1_CONFIG)
    return pipeline


def write_tiny_unet(path: Path, unet_config: dict, seed: int = 0, resolution: int = 256) -> Path:
    """A random-weight LatentSync UNet of the given (tiny) config as an official `latentsync_unet.pt`
    (`{"state_dict", "global_step"}`), with the config beside it as `<name>.json` (its face resolution
    too: 256 as 1.5, 512 as 1.6)."""
    import json

    from latentsync.unet.model import build_unet

    torch.manual_seed(seed)
    unet = build_unet(unet_config, device="cpu")
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"state_dict": unet.state_dict(), "global_step": 1}, path)
    path.with_suffix(".json").write_text(json.dumps({"unet_config": unet_config, "resolution": resolution}))
    return path


def write_lipsync_models(models: Path, unet_config: dict, vae_widths: tuple[int, ...] | None = None) -> Path:
    """Random-weight models in the official formats, laid out as a ComfyUI models/ folder under the names the
    shipped workflows use: a tiny UNet (config beside it), whisper tiny.pt and a full-size SD VAE (and TAESD,
    the cheap stand-in most workflow tests choose). `vae_widths` narrows the SD VAE for the library path, whose
    loader takes one (ComfyUI's always builds the full width)."""
    from scripts.vae_files import write_sd_vae, write_taesd

    write_tiny_unet(models / "latentsync" / "1.5" / "latentsync_unet.pt", unet_config)
    write_whisper_checkpoint(models / "whisper" / "tiny.pt")
    vae = models / "vae" / "vae-ft-mse-840000-ema-pruned.safetensors"
    write_sd_vae(vae, **({"widths": vae_widths} if vae_widths else {}))
    write_taesd(models / "vae_approx")  # ComfyUI's Load VAE offers it as "taesd"
    return models
