"""The pack's own socket types, shared by its nodes."""
from ._comfy import io

# latentsync.audio.vad.SpeechSegments: speech times in seconds, from the VAD node to the encoder and sampler.
Speech = io.Custom("LATENTSYNC_SPEECH")

# latentsync.audio.features.AudioFeatures: per-frame whisper chunks [N, 50, 384] and the speech mask.
AudioFeatures = io.Custom("LATENTSYNC_AUDIO_FEATURES")

# nodes.unet_loader.LoadedUNet: the managed UNet and its face resolution, from the loader to the sampler.
LatentSyncModel = io.Custom("LATENTSYNC_MODEL")

# latentsync.face.align.AlignedFaces: per-frame crops, matrices, masks and face-found flags.
Faces = io.Custom("LATENTSYNC_FACES")

# latentsync.face.tracks.FaceTracks: every face of a clip as a track (A, B, ...), from Detect Faces.
FaceTracks = io.Custom("LATENTSYNC_FACE_TRACKS")

# list[latentsync.speakers.cast.Speaker]: voices with their features and speech, from Speaker / Diarize Speakers.
Speakers = io.Custom("LATENTSYNC_SPEAKERS")

# latentsync.speakers.cast.Cast: each face track and the speaker that drives it, for the speakers sampler.
Cast = io.Custom("LATENTSYNC_CAST")

# latentsync.prepared.PreparedVideo: a video's faces and VAE latents, from Prepare Video to the samplers.
Prepared = io.Custom("LATENTSYNC_PREPARED")
