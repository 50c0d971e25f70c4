"""Lip-sync sampling: noise schedulers, the frame plan, one window's denoising, the sampler, the VAE."""
