"""LatentSync's UNet: the model and its layers, configs, strict loading, quantization, DeepCache."""
