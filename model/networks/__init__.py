"""The network: STDiT, its attention (fusable projections, RoPE, SDPA), sequence parallelism and block compilation."""
