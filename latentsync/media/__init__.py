"""Reading and writing media files: audio decoding to 16 kHz mono, video frames in, mp4 out."""
