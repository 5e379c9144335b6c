"""The precompute step: VAE latents and text embeddings, once, keyed by what they depend on."""
