"""Faces: detection and tracking, alignment to crops, the mouth mask, and pasting crops back."""
