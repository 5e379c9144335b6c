"""Capacity before spending it: FLOPs, memory, GPUs, aspect-ratio buckets and the cost of a training schedule."""
