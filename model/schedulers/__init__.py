"""Rectified flow: the training objective (timestep draws and shift) and the sampling schedule."""
