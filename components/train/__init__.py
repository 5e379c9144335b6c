"""The train step: the three STDiT stages on precomputed latents."""
