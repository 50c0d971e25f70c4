"""A prepared video ("avatar"): a video's faces and VAE latents, made once and reused with every voice."""
from .make import (file_video_identity, prepare_file, prepare_frames, scan_faces, use_or_prepare,
                   vae_identity)
from .store import (PREPARED, REBUILD_PREPARED, PreparedError, PreparedVideo, frames_identity, open_prepared,
                    prepared_identity)

__all__ = ["PREPARED", "REBUILD_PREPARED", "PreparedError", "PreparedVideo",
           "file_video_identity", "frames_identity", "open_prepared",
           "prepare_file", "prepare_frames", "prepared_identity", "scan_faces", "use_or_prepare", "vae_identity"]
