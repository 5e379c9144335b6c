"""Weights from elsewhere: the encoders (VAE, T5), models by hub id or path, and imports of released checkpoints."""
