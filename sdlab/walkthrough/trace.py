"""One text-to-image generation, shape by shape, read off the real modules.

`walkthrough(spec)` builds the model on the meta device and pushes meta tensors through it: the text encoder,
one UNet call on the classifier-free guidance batch, the guidance combination, one DDIM step and the VAE
decoder, then an image through the VAE encoder. Forward hooks on the modules record every output shape, so
nothing here is computed by hand: a different config gives different shapes. Meta tensors carry shapes and
dtypes without storage, so SD 1.5 at 512x512 takes seconds on a CPU and no memory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from diffusers import DDIMScheduler
from diffusers.models.attention_processor import Attention
from diffusers.models.downsampling import Downsample2D
from torch.overrides import TorchFunctionMode

from ..toymodel.architecture import SCHEDULER_CONFIG
from .configs import MetaModel, ModelSpec, build_on_meta

COMPONENTS = ("unet", "vae", "text_encoder", "text_encoder_2")
"""The parts whose parameters a walkthrough counts (the second text encoder only where there is one: SDXL)."""


@dataclass(frozen=True)
class Stage:
    """One step of the generation (or of encoding an image) and the shape of what it produces."""

    part: str
    """The component or operation: "text encoder", "UNet", "guidance", "VAE decoder", ..."""
    step: str
    """What happens, named the same way for every model so that walkthroughs line up ("down block 0")."""
    shape: tuple
    """The output's shape (batch first, channels before height and width, as in PyTorch)."""
    note: str = ""
    """The module's class, where cross-attention sits inside it, and the like."""
    attention: int = 0
    """Side of the latent grid at which cross-attention runs inside this stage (64 for SD's first level), 0 if
    it has none."""


@dataclass(frozen=True)
class CrossAttention:
    """One cross-attention layer (`attn2`) of the UNet as it ran: image tokens attend to the text tokens."""

    layer: str
    """Module path in the UNet, e.g. "down_blocks.0.attentions.1.transformer_blocks.0.attn2"."""
    resolution: int
    """Side of the latent grid whose cells are the queries (64 at SD's first level)."""
    queries: int
    """Image tokens: resolution²."""
    keys: int
    """Text tokens: 77."""
    context_dim: int
    """Width of the text encoder's states that keys and values are projected from."""
    heads: int


@dataclass(frozen=True)
class Padding:
    """A `Downsample2D` as it ran: how it padded and what its stride-2 convolution made of it."""

    layer: str
    pad: tuple | None
    """The explicit `F.pad` before the convolution, (left, right, top, bottom); None when there is none."""
    conv_padding: tuple
    """The convolution's own (symmetric) padding."""
    before: tuple
    padded: tuple
    """The input shape the convolution sees (after `pad`)."""
    after: tuple


@dataclass
class Walkthrough:
    """Everything `walkthrough` measured on one model."""

    name: str
    source: str
    parameters: dict
    """Parameters per component: {"unet": ..., "vae": ..., "text_encoder": ...} (and "text_encoder_2" for SDXL)."""
    classes: dict
    """Class name per component."""
    image_size: int
    scaling_factor: float
    stages: list = field(default_factory=list)
    """The generation: prompt → context, noise → UNet → guidance → scheduler → VAE decoder → image."""
    encoder: list = field(default_factory=list)
    """An image through the VAE encoder to a scaled latent."""
    cross_attention: list = field(default_factory=list)
    downsampling: list = field(default_factory=list)
    """Every `Downsample2D`: the VAE encoder's, then the UNet's."""

    @property
    def total_parameters(self) -> int:
        return sum(self.parameters.values())

    @property
    def cross_attention_resolutions(self) -> list:
        """The latent resolutions at which the UNet has cross-attention, largest first."""
        return sorted({c.resolution for c in self.cross_attention}, reverse=True)


def _shape(output) -> tuple:
    if isinstance(output, (tuple, list)):
        output = output[0]
    return tuple(getattr(output, "sample", output).shape)


def dims(shape) -> str:
    """A shape as "2×4×64×64"."""
    return "×".join(str(n) for n in shape)


def _traced(blocks: dict, run):
    """`run()` with forward hooks on `blocks` ({step: module}): its result, and each block's output shape."""
    shapes = {}
    handles = [module.register_forward_hook(lambda m, args, out, step=step: shapes.__setitem__(step, _shape(out)))
               for step, module in blocks.items()]
    try:
        return run(), shapes
    finally:
        for handle in handles:
            handle.remove()


class _Downsampling(TorchFunctionMode):
    """Records each `Downsample2D` call: the `F.pad` it makes (if any), its input, padded and output shapes."""

    def __init__(self, modules: dict):
        super().__init__()
        self.found, self.current, self.handles = [], None, []
        for name, module in modules.items():
            self.handles.append(module.register_forward_pre_hook(lambda m, args, name=name: self._start(name, args)))
            self.handles.append(module.register_forward_hook(lambda m, args, out, name=name: self._end(m, out)))

    def _start(self, name, args):
        self.current = dict(layer=name, pad=None, before=tuple(args[0].shape), padded=tuple(args[0].shape))

    def _end(self, module, out):
        self.found.append(Padding(conv_padding=tuple(module.conv.padding), after=_shape(out), **self.current))
        self.current = None

    def __torch_function__(self, func, types, args=(), kwargs=None):
        result = func(*args, **(kwargs or {}))
        if func is F.pad and self.current is not None:
            pad = args[1] if len(args) > 1 else kwargs["pad"]
            self.current.update(pad=tuple(pad), padded=tuple(result.shape))
        return result

    def __exit__(self, *exc):
        for handle in self.handles:
            handle.remove()
        return super().__exit__(*exc)


def _watch_cross_attention(unet) -> tuple[list, list]:
    found, handles = [], []

    def record(name, module, args, kwargs):
        hidden = args[0] if args else kwargs["hidden_states"]
        context = kwargs.get("encoder_hidden_states")
        side = math.isqrt(hidden.shape[1])
        found.append(CrossAttention(name, side, hidden.shape[1], context.shape[1], context.shape[-1], module.heads))

    for name, module in unet.named_modules():
        if isinstance(module, Attention) and module.is_cross_attention:
            handles.append(module.register_forward_pre_hook(
                lambda m, args, kwargs, name=name: record(name, m, args, kwargs), with_kwargs=True))
    return found, handles


def _block_stage(step: str, shape: tuple, block, prefix: str, cross: list) -> Stage:
    inside = [c for c in cross if c.layer.startswith(prefix + ".")]
    note = type(block).__name__
    if inside:
        c = inside[0]
        note += f"; cross-attention at {c.resolution}×{c.resolution} ({len(inside)} layer{'s' * (len(inside) > 1)}, " \
                f"{c.heads} heads, {c.queries}×{c.keys} map per head)"
    if getattr(block, "downsamplers", None):
        note += "; then downsample ×½"
    if getattr(block, "upsamplers", None):
        note += "; then upsample ×2"
    return Stage("UNet", step, shape, note, inside[0].resolution if inside else 0)


def _text(model: MetaModel, batch: int, stages: list) -> tuple:
    """The tokenizer and the text encoder(s): the context the UNet attends to, and SDXL's pooled text embedding
    (None for SD 1.x / 2.x)."""
    config = model.text_encoder.config
    ids = torch.zeros(batch, config.max_position_embeddings, dtype=torch.long, device="meta")
    stages.append(Stage("tokenizer", "prompt → token ids", tuple(ids.shape),
                        f"padded to {config.max_position_embeddings}" + ("; the prompt and the empty prompt" if batch == 2 else "")))
    if model.text_encoder_2 is None:
        return _encoder(model.text_encoder, "text encoder", ids, stages).last_hidden_state, None
    # SDXL: both encoders' penultimate layers side by side; the second's pooled output, projected
    first = _encoder(model.text_encoder, "text encoder", ids, stages, penultimate=True)
    second = _encoder(model.text_encoder_2, "text encoder 2", ids, stages, penultimate=True)
    context = torch.cat([first.hidden_states[-2], second.hidden_states[-2]], dim=-1)
    stages.append(Stage("text encoders", "both contexts side by side", tuple(context.shape),
                        "concatenated per token position: one key per token for the UNet"))
    pooled = second.text_embeds
    stages.append(Stage("text encoder 2", "pooled and projected → text_embeds", tuple(pooled.shape),
                        "the end token's state, projected: conditions the UNet like the time step"))
    return context, pooled


def _encoder(encoder, part: str, ids, stages: list, penultimate: bool = False):
    config = encoder.config
    text_model = getattr(encoder, "text_model", encoder)  # transformers < 5 nests it
    out, shapes = _traced({"embeddings": text_model.embeddings}, lambda: encoder(ids, output_hidden_states=penultimate))
    stages.append(Stage(part, "token + position embeddings", shapes["embeddings"], f"vocabulary {config.vocab_size}"))
    states = out.hidden_states[-2] if penultimate else out.last_hidden_state
    stages.append(Stage(part, "transformer layers → context", tuple(states.shape),
                        f"{config.num_hidden_layers} layers, {config.num_attention_heads} heads, {config.hidden_act}"
                        + ("; the penultimate layer's states" if penultimate else "")))
    return out


def _micro_conditioning(unet, pooled, size: int, stages: list) -> dict:
    """SDXL's extra UNet inputs: the pooled text embedding and six time ids (original size, crop corner, target
    size), which the pipeline builds from the image size; {} for a UNet without them."""
    if unet.config.addition_embed_type != "text_time":
        return {}
    time_ids = torch.zeros(pooled.shape[0], 6, device="meta")
    stages.append(Stage("UNet", "micro-conditioning time ids", tuple(time_ids.shape),
                        f"original size, crop top-left, target size: ({size}, {size}, 0, 0, {size}, {size})"))
    return {"added_cond_kwargs": {"text_embeds": pooled, "time_ids": time_ids}}


def _unet(model: MetaModel, latent, context, stages: list, cross: list, extra: dict) -> torch.Tensor:
    unet = model.unet
    batch = context.shape[0]
    latents = torch.cat([latent] * batch)
    if batch == 2:
        stages.append(Stage("UNet", "guidance batch", tuple(latents.shape), "the latent twice: with and without the prompt"))
    blocks = [("time embedding", "time_embedding", unet.time_embedding)]
    if extra:
        blocks += [("text_embeds + time ids embedding", "add_embedding", unet.add_embedding)]
    blocks += [("conv_in", "conv_in", unet.conv_in)]
    blocks += [(f"down block {i}", f"down_blocks.{i}", b) for i, b in enumerate(unet.down_blocks)]
    blocks += [("mid block", "mid_block", unet.mid_block)]
    blocks += [(f"up block {i}", f"up_blocks.{i}", b) for i, b in enumerate(unet.up_blocks)]
    blocks += [("conv_out → noise prediction", "conv_out", unet.conv_out)]
    found, handles = _watch_cross_attention(unet)
    t = torch.tensor(999, device="meta")
    try:
        noise, shapes = _traced({name: block for _, name, block in blocks},
                                lambda: unet(latents, t, encoder_hidden_states=context, **extra).sample)
    finally:
        for handle in handles:
            handle.remove()
    cross += found
    for step, name, block in blocks:
        stages.append(_block_stage(step, shapes[name], block, name, found))
    return noise


def _decode(model: MetaModel, latent, stages: list) -> None:
    vae, decoder = model.vae, model.vae.decoder
    scale = vae.config.scaling_factor
    z = latent / scale
    stages.append(Stage("VAE decoder", "latent ÷ scaling factor", tuple(z.shape), f"÷ {scale:g}: undo the latent scaling"))
    blocks = [("conv_in", decoder.conv_in), ("mid block", decoder.mid_block)]
    blocks += [(f"up block {i}", b) for i, b in enumerate(decoder.up_blocks)]
    blocks += [("conv_out → image", decoder.conv_out)]
    image, shapes = _traced(dict(blocks), lambda: vae.decode(z).sample)
    for step, block in blocks:
        note = type(block).__name__ + ("; then upsample ×2 (nearest, conv 3×3)" if getattr(block, "upsamplers", None) else "")
        stages.append(Stage("VAE decoder", step, shapes[step], note))
    stages.append(Stage("image", "pixels (height × width × RGB)", tuple(image[0].permute(1, 2, 0).shape), "[-1, 1] → [0, 255]"))


def _encode(model: MetaModel, size: int, stages: list) -> None:
    vae, encoder = model.vae, model.vae.encoder
    image = torch.empty(1, vae.config.in_channels, size, size, device="meta")
    stages.append(Stage("VAE encoder", "image", tuple(image.shape), "RGB in [-1, 1]"))
    blocks = [("conv_in", encoder.conv_in)] + [(f"down block {i}", b) for i, b in enumerate(encoder.down_blocks)]
    blocks += [("mid block", encoder.mid_block), ("conv_out → mean and log-variance", encoder.conv_out)]
    latent, shapes = _traced(dict(blocks), lambda: vae.encode(image).latent_dist.mode())
    for step, block in blocks:
        note = type(block).__name__
        if getattr(block, "downsamplers", None):
            note += "; then downsample ×½ (pad right and bottom by 1, conv 3×3 stride 2)"
        stages.append(Stage("VAE encoder", step, shapes[step], note))
    stages.append(Stage("VAE encoder", "latent (the distribution's mode)", tuple(latent.shape)))
    scale = vae.config.scaling_factor
    stages.append(Stage("VAE encoder", "latent × scaling factor", tuple((latent * scale).shape),
                        f"× {scale:g}: about unit variance for the UNet"))


def walkthrough(spec: ModelSpec, *, guidance: bool = True) -> Walkthrough:
    """Parameter counts and the shapes of one generation at the model's native size (SD 1.5: 512x512; SDXL:
    1024x1024), measured on `spec` built on the meta device. `guidance`: classifier-free guidance, i.e. the UNet
    runs on a batch of 2 (prompt and empty prompt). `spec`: `SD15`, `SD21_BASE`, `SDXL` or
    `spec_from_pipeline(pipe)`."""
    model = build_on_meta(spec)
    parts = [part for part in COMPONENTS if getattr(model, part) is not None]
    vae_factor = 2 ** (len(model.vae.config.block_out_channels) - 1)
    size = model.unet.config.sample_size * vae_factor
    walk = Walkthrough(
        name=spec.name,
        source=spec.source,
        parameters={part: sum(p.numel() for p in getattr(model, part).parameters()) for part in parts},
        classes={part: type(getattr(model, part)).__name__ for part in parts},
        image_size=size,
        scaling_factor=model.vae.config.scaling_factor,
    )
    side = model.unet.config.sample_size
    downsamplers = {f"vae.encoder.{n}": m for n, m in model.vae.encoder.named_modules() if isinstance(m, Downsample2D)}
    downsamplers.update({f"unet.{n}": m for n, m in model.unet.named_modules() if isinstance(m, Downsample2D)})
    with torch.no_grad(), _Downsampling(downsamplers) as downsampling:
        context, pooled = _text(model, 2 if guidance else 1, walk.stages)
        latent = torch.empty(1, model.unet.config.in_channels, side, side, device="meta")
        walk.stages.append(Stage("sampler", "initial noise latent", tuple(latent.shape), "seeded Gaussian"))
        extra = _micro_conditioning(model.unet, pooled, size, walk.stages)
        noise = _unet(model, latent, context, walk.stages, walk.cross_attention, extra)
        if guidance:
            uncond, cond = noise.chunk(2)
            noise = uncond + 7.5 * (cond - uncond)
            walk.stages.append(Stage("guidance", "ε(∅) + s·(ε(y) − ε(∅))", tuple(noise.shape), "one prediction again"))
        scheduler = DDIMScheduler(**SCHEDULER_CONFIG)
        scheduler.set_timesteps(25)
        latent = scheduler.step(noise, scheduler.timesteps[0], latent).prev_sample
        walk.stages.append(Stage("sampler", "DDIM step → next latent", tuple(latent.shape), "repeated for every step"))
        _decode(model, latent, walk.stages)
        _encode(model, size, walk.encoder)
    # the encoder ran last, but reads first: image → latent, then the UNet's own downsamplers
    walk.downsampling = sorted(downsampling.found, key=lambda p: not p.layer.startswith("vae."))
    return walk
