"""Upscaling generated faces or frames: super-resolution models, tiling, classical resizing."""
