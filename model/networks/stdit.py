"""STDiT: a diffusion transformer for video whose self-attention is split into a spatial and a temporal part.

Each block is the PixArt-alpha block with a temporal self-attention inserted after the spatial one:

    x = x + gate_msa  * SpatialAttn(modulate(norm1(x)))        within each frame,       cost T * S^2
    x = x + gate_temp * TemporalAttn(modulate(norm_temp(x)))   across frames per patch, cost S * T^2
    x = x + CrossAttn(x, text)                                 video tokens -> text tokens
    x = x + gate_mlp  * MLP(modulate(norm2(x)))

Timestep conditioning is adaLN-single: one global t-block makes 6*C modulation values; every block adds its own
learned table. The temporal branch reuses the attention part of that conditioning plus its own 3*C table, so that
its only new weights are its attention and that table. Its output projection starts at zero: a new STDiT is the
image model applied frame by frame. With one frame the temporal branch is skipped entirely. The frame index
reaches the model only inside that branch (`temporal_position`: RoPE on queries and keys after QK-norm, a 1D
sin-cos embedding added to the branch's input, or both), never through the tokens the spatial part sees, unless
`frame_embedding` is on: then a learned projection of the frame index's sin-cos embedding is added to every token
of a video (Latte's temporal embedding), so that spatial attention, cross-attention and the MLP know which frame
they draw; it starts at zero like the temporal output, so the video model still starts as the image model. A model
that must draw a prompted motion from noise needs it: with relative positions alone every frame starts alike.

Speed switches that change nothing the model computes (off on a new model; the trainer sets them):
`fuse_projections()` (model.networks.attention), `recompute_blocks` (the first N blocks recompute under gradient
checkpointing; model.planning.memory chooses N) and `compile_blocks()` (model.networks.compile).

`temporal_branch="opensora-v1"` is Open-Sora 1.0's block instead (model.weights.opensora loads its released
weights): the temporal attention reads the residual stream itself, with no norm or modulation of its own, adds under
the spatial branch's gate, runs on single frames too, and the sin-cos frame embedding (`time_scale`) enters its input
in the first block only.

`attention_mode="full"` gives the baseline: one joint spatio-temporal self-attention over all T*S tokens in place of
the spatial/temporal pair, cost (T*S)^2, everything else identical.

Parameter names of the shared parts match diffusers' `PixArtTransformer2DModel`, so a PixArt checkpoint loads
into the spatial part unchanged (see `model.weights.pixart`).
"""

from __future__ import annotations

import logging

import torch
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.embeddings import (
    PatchEmbed,
    PixArtAlphaTextProjection,
    get_1d_sincos_pos_embed_from_grid,
)
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.normalization import AdaLayerNormSingle
from einops import rearrange
from torch import nn

from model.networks.attention import FusableProjections, rope_cos_sin
from model.networks.block import STDiTBlock, modulate
from model.networks.compile import CompiledBlocks
from model.networks.parallel import (
    SequenceParallel,
    gather_frames,
    local_frames,
)

ATTENTION_MODES = ("spatial_temporal", "full")
TEMPORAL_POSITIONS = ("rope", "sincos", "rope+sincos")
TEMPORAL_BRANCHES = ("modulated", "opensora-v1")
EMPTY_FP32_WARNING = "should be kept in float32: []"


class _DropEmptyFp32Warning(logging.Filter):
    """diffusers' `ModelMixin.to` (0.42) warns on every dtype cast that modules "should be kept in float32" even when
    the model names none (an empty list is not None): one such line per cast in every training and benchmark log.
    Only that empty case is dropped; a model that does keep modules in float32 is still warned about."""

    def filter(self, record: logging.LogRecord) -> bool:
        return EMPTY_FP32_WARNING not in record.getMessage()


logging.getLogger(ModelMixin.__module__).addFilter(_DropEmptyFp32Warning())


class STDiT(FusableProjections, ModelMixin, ConfigMixin):
    """Spatial-temporal DiT on (B, C, T, H, W) latents, conditioned on a timestep and text-encoder tokens.

    `sample_size` is the latent side the 2D sin-cos position embedding is laid out for (diffusers' base size);
    other sizes use the same embedding interpolated to that base. `caption_max_length` sizes the learned null
    caption that replaces dropped captions (classifier-free guidance).
    """

    _supports_gradient_checkpointing = True
    _no_split_modules = ("STDiTBlock",)

    @register_to_config
    def __init__(
        self,
        in_channels: int = 4,
        out_channels: int | None = None,
        patch_size: int = 2,
        num_layers: int = 28,
        num_attention_heads: int = 16,
        attention_head_dim: int = 72,
        caption_channels: int = 4096,
        caption_max_length: int = 300,
        sample_size: int = 32,
        interpolation_scale: float | None = None,
        mlp_ratio: float = 4.0,
        attention_mode: str = "spatial_temporal",
        qk_norm: bool = False,
        temporal_position: str = "rope",
        temporal_branch: str = "modulated",
        time_scale: float = 1.0,
        frame_embedding: bool = False,
        rope_theta: float = 10000.0,
        activation_fn: str = "gelu-approximate",
        attention_bias: bool = True,
        norm_eps: float = 1e-6,
        dropout: float = 0.0,
    ):
        super().__init__()
        if attention_mode not in ATTENTION_MODES:
            raise ValueError(f"attention_mode={attention_mode!r} must be one of {ATTENTION_MODES}")
        if temporal_position not in TEMPORAL_POSITIONS:
            raise ValueError(f"temporal_position={temporal_position!r} must be one of {TEMPORAL_POSITIONS}")
        if temporal_branch not in TEMPORAL_BRANCHES:
            raise ValueError(f"temporal_branch={temporal_branch!r} must be one of {TEMPORAL_BRANCHES}")
        if temporal_branch == "opensora-v1" and (attention_mode, temporal_position) != ("spatial_temporal", "sincos"):
            raise ValueError("temporal_branch='opensora-v1' is Open-Sora 1.0's block: it needs attention_mode="
                             "'spatial_temporal' and temporal_position='sincos'")  # fmt: skip
        if sample_size % patch_size:
            raise ValueError(f"sample_size={sample_size} must be divisible by patch_size={patch_size}")
        dim = num_attention_heads * attention_head_dim
        self.out_channels = in_channels if out_channels is None else out_channels
        self.gradient_checkpointing = False
        self.recompute_blocks: int | None = None  # with checkpointing: the first N blocks recompute; None: all
        self.sequence_parallel: SequenceParallel | None = None  # set by the trainer (see model.networks.parallel)
        self._blocks: CompiledBlocks | None = None  # set by compile_blocks

        self.pos_embed = PatchEmbed(
            height=sample_size,
            width=sample_size,
            patch_size=patch_size,
            in_channels=in_channels,
            embed_dim=dim,
            interpolation_scale=interpolation_scale or max(sample_size // 64, 1),
        )
        # the frame index for every token of a video, through a projection that starts at zero (None: the index
        # reaches only the temporal branch)
        self.frame_embedder = nn.Linear(dim, dim) if frame_embedding else None
        self.adaln_single = AdaLayerNormSingle(dim, use_additional_conditions=False)
        self.caption_projection = PixArtAlphaTextProjection(in_features=caption_channels, hidden_size=dim)
        self.y_embedding = nn.Parameter(torch.randn(caption_max_length, caption_channels) / caption_channels**0.5)
        self.transformer_blocks = nn.ModuleList(
            STDiTBlock(
                dim,
                num_attention_heads,
                attention_head_dim,
                attention_mode=attention_mode,
                temporal_branch=temporal_branch,
                qk_norm=qk_norm,
                mlp_ratio=mlp_ratio,
                activation_fn=activation_fn,
                attention_bias=attention_bias,
                norm_eps=norm_eps,
                dropout=dropout,
            )
            for _ in range(num_layers)
        )
        self.norm_out = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.scale_shift_table = nn.Parameter(torch.randn(2, dim) / dim**0.5)
        self.proj_out = nn.Linear(dim, patch_size * patch_size * self.out_channels)
        self.initialize_weights()
        self.keep_separate_layout()

    def initialize_weights(self) -> None:
        """DiT/PixArt initialisation; zero output projections so a fresh model predicts zero."""
        for module in self.modules():
            if isinstance(module, nn.Linear):
                nn.init.xavier_uniform_(module.weight)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
        w = self.pos_embed.proj.weight
        nn.init.xavier_uniform_(w.view(w.shape[0], -1))
        nn.init.zeros_(self.pos_embed.proj.bias)
        emb = self.adaln_single.emb.timestep_embedder
        for linear in (emb.linear_1, emb.linear_2, self.adaln_single.linear):
            nn.init.normal_(linear.weight, std=0.02)
        # The caption projection and the cross-attention keep the Xavier initialisation: scaled by the text encoder's
        # width, it equals PixArt's N(0, 0.02) for T5-XXL into 1152 channels, and a small text encoder's tokens still
        # reach the blocks at full strength (a fixed 0.02 makes them ~1% of the signal there, and a from-scratch
        # model then takes thousands of steps to start reading the prompt)
        self.zero_temporal_output()
        nn.init.zeros_(self.proj_out.weight)
        nn.init.zeros_(self.proj_out.bias)

    def zero_temporal_output(self) -> None:
        """Zero the temporal attention's output projection: the model becomes frame-wise (stage 2's start)."""
        for block in self.transformer_blocks:
            if block.attention_mode == "spatial_temporal":
                nn.init.zeros_(block.attn_temp.to_out[0].weight)
                nn.init.zeros_(block.attn_temp.to_out[0].bias)
        if self.frame_embedder is not None:
            nn.init.zeros_(self.frame_embedder.weight)
            nn.init.zeros_(self.frame_embedder.bias)

    def compile_blocks(self, backend="inductor", **options) -> STDiT:
        """Compile every block in place with `torch.compile` (see model.networks.compile); eager after a compiler
        failure."""
        self._blocks = CompiledBlocks(self.transformer_blocks, backend, **options)
        return self

    @property
    def compiled(self):
        """The compiler backend the blocks run through, None when eager."""
        return self._blocks.backend if self._blocks is not None else None

    def temporal_parameters(self) -> list[tuple[str, nn.Parameter]]:
        """(name, parameter) of every weight that exists only for the temporal branch."""
        return [(n, p) for n, p in self.named_parameters() if is_temporal_parameter(n)]

    def _embed_patches(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Patch tokens (B*T, h*w, C) of frames x (B*T, Cin, H, W), the 2D sin-cos position embedding added. At
        another size than the one built for, diffusers' PatchEmbed stretches the grid to that size; Open-Sora 1.0
        (temporal_branch='opensora-v1') keeps the patch index over its scale: column then row halves of the
        width, each position index / interpolation_scale."""
        embed = self.pos_embed
        if self.config.temporal_branch != "opensora-v1" or (h, w) == (embed.height, embed.width):
            return embed(x)
        tokens = embed.proj(x).flatten(2).transpose(1, 2)
        rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
        half = tokens.shape[-1] // 2
        grid = [
            get_1d_sincos_pos_embed_from_grid(half, index.flatten() / embed.interpolation_scale, dtype=torch.float64)
            for index in (cols, rows)
        ]
        return tokens + torch.cat(grid, dim=1).to(device=tokens.device, dtype=tokens.dtype)[None]

    def embed_caption(
        self, text: torch.Tensor, text_mask: torch.Tensor | None, drop: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Project text tokens (B, L, Ccap) to the model width; dropped captions become the learned null caption."""
        B, L, _ = text.shape
        if self.config.caption_max_length < L:
            raise ValueError(
                f"{L} text tokens exceed caption_max_length={self.config.caption_max_length}; "
                "truncate the captions or build the model with a larger caption_max_length"
            )
        if text_mask is None:
            text_mask = torch.ones(B, L, dtype=torch.bool, device=text.device)
        text_mask = text_mask.bool()
        if drop is not None and bool(drop.any()):
            # a dropped caption is the whole learned null caption (caption_max_length tokens), however long the
            # batch's padded captions are: the unconditional branch is one thing in training and in sampling (as
            # T2VPipeline's null_caption_mask reads it)
            drop = drop.to(device=text.device, dtype=torch.bool)
            N = self.config.caption_max_length
            text = torch.nn.functional.pad(text, (0, 0, 0, N - L))  # (B, N, Ccap), padding masked out
            text_mask = torch.nn.functional.pad(text_mask, (0, N - L))
            null = self.y_embedding.to(text.dtype)[None].expand(B, -1, -1)
            text = torch.where(drop[:, None, None], null, text)
            if self.config.temporal_branch != "opensora-v1":  # Open-Sora 1.0 reads it under the caption's mask
                text_mask = text_mask | drop[:, None]
        elif drop is not None and torch.is_grad_enabled():
            # no caption of this batch dropped: the null caption still enters the graph, adding exact zeros, so that
            # every data-parallel rank's backward reaches it (a zero gradient) and ZeRO's gradient buckets are the
            # same size on every rank whichever ranks drop a caption
            text = text + 0.0 * self.y_embedding.to(text.dtype).sum()
        return self.caption_projection(text), text_mask

    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        encoder_attention_mask: torch.Tensor | None = None,
        caption_drop_mask: torch.Tensor | None = None,
        return_dict: bool = True,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        """Predict for latents (B, C, T, H, W) at `timestep` (B,) given text tokens (B, L, Ccap).

        `encoder_attention_mask` (B, L) marks real text tokens; `caption_drop_mask` (B,) replaces whole captions by
        the null caption (training dropout, and the unconditional half of classifier-free guidance).
        """
        B, _, T, H, W = hidden_states.shape
        # the model computes in its own dtype whatever it is given: fp32 latents and text into a model held in bf16
        # (as ZeRO-2 holds it) for validation and probes, as well as bf16 batches
        hidden_states, encoder_hidden_states = hidden_states.to(self.dtype), encoder_hidden_states.to(self.dtype)
        p = self.config.patch_size
        if H % p or W % p:
            raise ValueError(f"latent height and width ({H}x{W}) must be divisible by patch_size={p}")
        h, w = H // p, W // p
        if timestep.ndim == 0:
            timestep = timestep.expand(B)

        x = rearrange(hidden_states, "b c t h w -> (b t) c h w")
        x = self._embed_patches(x, h, w)  # (B*T, S, C) with the 2D sin-cos embedding added
        x = rearrange(x, "(b t) s c -> b t s c", b=B)
        if self.frame_embedder is not None and T > 1:
            x = x + self.frame_embedder(self._sincos(torch.arange(T, device=x.device), x.dtype))[None, :, None]
        x = rearrange(x, "b t s c -> b (t s) c")
        t6, t_emb = self.adaln_single(timestep, batch_size=B, hidden_dtype=x.dtype)  # (B, 6C), (B, C)
        text, text_mask = self.embed_caption(encoder_hidden_states, encoder_attention_mask, caption_drop_mask)
        text_mask = text_mask[:, None, None, :]  # (B, 1, 1, L), broadcast over heads and queries

        rope, temporal_pe = self._temporal_position(T, h * w, x.device, x.dtype)
        sp = self.sequence_parallel
        if sp is not None and (self.config.attention_mode != "spatial_temporal" or not sp.can_split(T, h * w)):
            sp = None  # computed whole on every rank of the group
        if sp is not None:  # this rank's frames
            x = rearrange(local_frames(rearrange(x, "b (t s) c -> b t s c", t=T), 1, sp), "b t s c -> b (t s) c")
        run = self._blocks or (lambda block, *args: block(*args))
        recompute = self.recompute_blocks if self.recompute_blocks is not None else len(self.transformer_blocks)
        first_only = self.config.temporal_branch == "opensora-v1"  # Open-Sora 1.0: the frame embedding in block 0
        for i, block in enumerate(self.transformer_blocks):
            args = (x, text, text_mask, t6, T, rope, None if first_only and i else temporal_pe, sp)
            if torch.is_grad_enabled() and self.gradient_checkpointing and i < recompute:
                x = self._gradient_checkpointing_func(run, block, *args)
            else:
                x = run(block, *args)

        shift, scale = (self.scale_shift_table[None] + t_emb[:, None]).chunk(2, dim=1)  # (B, 1, C) each
        x = self.proj_out(modulate(self.norm_out(x), shift, scale))  # (B, T*S, p*p*Cout), or this rank's T/sp
        if sp is not None:
            x = rearrange(gather_frames(rearrange(x, "b (t s) c -> b t s c", s=h * w), 1, sp), "b t s c -> b (t s) c")
        out = rearrange(x, "b (t h w) (p q c) -> b c t (h p) (w q)", t=T, h=h, w=w, p=p, q=p)
        return Transformer2DModelOutput(sample=out) if return_dict else (out,)

    def _sincos(self, frames: torch.Tensor, dtype) -> torch.Tensor:
        """(N, C) 1D sin-cos embedding of the frame indices `frames` (N,), on their device."""
        dim = self.config.num_attention_heads * self.config.attention_head_dim
        return get_1d_sincos_pos_embed_from_grid(dim, frames.float(), dtype=torch.float32).to(dtype)

    def _temporal_position(self, num_frames: int, tokens_per_frame: int, device, dtype):
        """Rotary tables and/or a 1D sin-cos embedding of the frame index, for the attention that spans frames:
        per frame for temporal attention, per token (its frame's) for full attention. None for images."""
        if num_frames == 1 and self.config.temporal_branch != "opensora-v1":
            return None, None
        frames = torch.arange(num_frames, device=device)
        if self.config.attention_mode == "full":
            frames = frames.repeat_interleave(tokens_per_frame)
        rope = pe = None
        if "rope" in self.config.temporal_position:
            rope = rope_cos_sin(frames, self.config.attention_head_dim, self.config.rope_theta, dtype)
        if "sincos" in self.config.temporal_position:
            pe = self._sincos(frames / self.config.time_scale, dtype)  # Open-Sora's time_scale: 1 at 16 frames
        return rope, pe


def is_temporal_parameter(name: str) -> bool:
    return ".attn_temp." in name or name.endswith("scale_shift_table_temporal") or name.startswith("frame_embedder.")
