"""Stock diffusers transformers with random weights, built offline: tiny (tests, demo) and real size (GPU).

The models are diffusers' own classes, unmodified; only their configs are chosen here. Tiny sizes use
sequence lengths that are not tile multiples and, for Mochi, text padding that differs per batch element.
Real sizes are SD3.5-large and Flux-dev at 1024², and Mochi at 848×480×163 frames with a 256-token prompt of
which 100 tokens are valid (the shapes of `benchmarks/`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

MODELS = ("sd3", "flux", "mochi")
SIZES = ("tiny", "real")


@dataclass
class ModelCase:
    name: str
    model: torch.nn.Module
    inputs: dict  # keyword arguments of one forward
    joint_layers: int  # attention layers that are joint attention (what the pass must fuse)


def build(name: str, size: str = "tiny", *, device="cpu", dtype=torch.float32, seed: int = 0) -> ModelCase:
    """A random-weight model and inputs for one forward. Real sizes need a GPU (several GB of weights)."""
    if name not in MODELS or size not in SIZES:
        raise ValueError(f"model must be one of {MODELS} and size one of {SIZES}; got {name!r}, {size!r}")
    torch.manual_seed(seed)
    device = torch.device(device)
    with device:
        case = _BUILDERS[name](size)
    if dtype != torch.float32:
        case.model.to(dtype=dtype)
    case.model.eval()
    case.inputs = {
        k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() and k != "timestep" else v
        for k, v in case.inputs.items()
    }
    return case


def _sd3(size: str) -> ModelCase:
    from diffusers import SD3Transformer2DModel

    if size == "tiny":
        # 5x3 patches = 15 image tokens, 7 text tokens; RMS qk-norm and a dual-attention layer as in SD3.5-medium.
        model = SD3Transformer2DModel(
            sample_size=8,
            patch_size=2,
            in_channels=4,
            num_layers=3,
            attention_head_dim=8,
            num_attention_heads=2,
            joint_attention_dim=16,
            caption_projection_dim=16,
            pooled_projection_dim=8,
            out_channels=4,
            qk_norm="rms_norm",
            dual_attention_layers=(0,),
        )
        inputs = dict(
            hidden_states=torch.randn(2, 4, 10, 6),
            encoder_hidden_states=torch.randn(2, 7, 16),
            pooled_projections=torch.randn(2, 8),
            timestep=torch.tensor([100.0, 700.0]),
        )
        return ModelCase("sd3", model, inputs, joint_layers=3)
    # SD3.5-large at 1024x1024: 4096 image tokens, 333 text tokens (77 CLIP + 256 T5), batch 2 (CFG).
    model = SD3Transformer2DModel(
        sample_size=128,
        patch_size=2,
        in_channels=16,
        num_layers=38,
        attention_head_dim=64,
        num_attention_heads=38,
        joint_attention_dim=4096,
        caption_projection_dim=2432,
        pooled_projection_dim=2048,
        out_channels=16,
        pos_embed_max_size=192,
        qk_norm="rms_norm",
    )
    inputs = dict(
        hidden_states=torch.randn(2, 16, 128, 128),
        encoder_hidden_states=torch.randn(2, 333, 4096),
        pooled_projections=torch.randn(2, 2048),
        timestep=torch.tensor([500.0, 500.0]),
    )
    return ModelCase("sd3", model, inputs, joint_layers=38)


def _flux_ids(height: int, width: int) -> torch.Tensor:
    ids = torch.zeros(height * width, 3)
    ids[:, 1] = torch.arange(height).repeat_interleave(width)
    ids[:, 2] = torch.arange(width).repeat(height)
    return ids


def _flux(size: str) -> ModelCase:
    from diffusers import FluxTransformer2DModel

    if size == "tiny":
        model = FluxTransformer2DModel(
            patch_size=1,
            in_channels=8,
            num_layers=2,
            num_single_layers=1,
            attention_head_dim=8,
            num_attention_heads=2,
            joint_attention_dim=16,
            pooled_projection_dim=8,
            axes_dims_rope=(2, 2, 4),
        )
        inputs = dict(
            hidden_states=torch.randn(2, 13, 8),
            encoder_hidden_states=torch.randn(2, 5, 16),
            pooled_projections=torch.randn(2, 8),
            timestep=torch.tensor([0.1, 0.9]),
            img_ids=_flux_ids(13, 1),
            txt_ids=torch.zeros(5, 3),
        )
        return ModelCase("flux", model, inputs, joint_layers=2)
    # Flux-dev at 1024x1024: 4096 image tokens, 512 text tokens.
    model = FluxTransformer2DModel(
        patch_size=1,
        in_channels=64,
        num_layers=19,
        num_single_layers=38,
        attention_head_dim=128,
        num_attention_heads=24,
        joint_attention_dim=4096,
        pooled_projection_dim=768,
        guidance_embeds=True,
        axes_dims_rope=(16, 56, 56),
    )
    inputs = dict(
        hidden_states=torch.randn(1, 4096, 64),
        encoder_hidden_states=torch.randn(1, 512, 4096),
        pooled_projections=torch.randn(1, 768),
        timestep=torch.tensor([0.5]),
        guidance=torch.tensor([3.5]),
        img_ids=_flux_ids(64, 64),
        txt_ids=torch.zeros(512, 3),
    )
    return ModelCase("flux", model, inputs, joint_layers=19)


def _mochi(size: str) -> ModelCase:
    from diffusers import MochiTransformer3DModel

    if size == "tiny":
        # 3 frames of 3x2 patches = 18 video tokens; 7 text tokens, 5 and 2 of them valid.
        model = MochiTransformer3DModel(
            patch_size=2,
            num_attention_heads=2,
            attention_head_dim=8,
            num_layers=2,
            pooled_projection_dim=16,
            in_channels=4,
            text_embed_dim=16,
            time_embed_dim=8,
            max_sequence_length=7,
        )
        mask = torch.zeros(2, 7, dtype=torch.long)
        mask[0, :5] = 1
        mask[1, :2] = 1
        inputs = dict(
            hidden_states=torch.randn(2, 4, 3, 6, 4),
            encoder_hidden_states=torch.randn(2, 7, 16),
            timestep=torch.tensor([10.0, 600.0]),
            encoder_attention_mask=mask,
        )
        return ModelCase("mochi", model, inputs, joint_layers=2)
    # 848x480, 163 frames: 28 latent frames of 60x106 -> 44520 video tokens; 256 text tokens, 100 valid.
    model = MochiTransformer3DModel()
    mask = torch.zeros(1, 256, dtype=torch.long)
    mask[:, :100] = 1
    inputs = dict(
        hidden_states=torch.randn(1, 12, 28, 60, 106),
        encoder_hidden_states=torch.randn(1, 256, 4096),
        timestep=torch.tensor([500.0]),
        encoder_attention_mask=mask,
    )
    return ModelCase("mochi", model, inputs, joint_layers=48)


_BUILDERS = {"sd3": _sd3, "flux": _flux, "mochi": _mochi}
