"""The voice: speech detection (silero, pyannote), the whisper encoder and per-frame audio features."""
