"""Which pipelines capture and edits run on, and what each family needs checked before a run.

Stable Diffusion 1.x / 2.x (`StableDiffusionPipeline`, the toy model) and SDXL base (`StableDiffusionXLPipeline`).
SDXL's UNet reads the text states of two encoders side by side (concatenated per token position) and is
conditioned on the second's pooled embedding and on the micro-conditioning time ids; the pipeline's own
`__call__` computes those and sdlab passes them through untouched. What sdlab adds is a check: token
positions are words only if both tokenizers put every word of the prompt at the same positions. The SDXL
refiner (no first text encoder, an aesthetic score instead of the target size) is not supported.
"""

from __future__ import annotations

from .. import align
from ..models import SUPPORTED
from .control import check_unet


def is_sdxl(pipe) -> bool:
    """True for an SDXL base pipeline (`StableDiffusionXLPipeline`)."""
    from diffusers import StableDiffusionXLPipeline

    return isinstance(pipe, StableDiffusionXLPipeline)


def check_pipeline(pipe, prompts=None) -> None:
    """A clear error unless `pipe` is a supported pipeline with a text-conditioned UNet (see the module
    docstring); with `prompts`, also unless both of an SDXL pipeline's tokenizers read them as the same words."""
    from diffusers import StableDiffusionPipeline

    name = type(pipe).__name__
    if not isinstance(pipe, StableDiffusionPipeline) and not is_sdxl(pipe):
        what = (" (the SDXL refiner and SDXL's image-to-image and inpainting pipelines are out of scope)"
                if "XL" in name else "")
        raise TypeError(f"{name} is not supported by sdlab's capture and edits{what}; sdlab runs {SUPPORTED}")
    if is_sdxl(pipe):
        _check_sdxl(pipe, name)
    check_unet(pipe.unet)
    if prompts is not None and is_sdxl(pipe):
        check_tokenizers(pipe, prompts)


def _check_sdxl(pipe, name: str) -> None:
    missing = [part for part in ("text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2")
               if getattr(pipe, part, None) is None]
    if missing or pipe.config.get("requires_aesthetics_score", False):
        why = f"has no {', '.join(missing)}" if missing else "is conditioned on an aesthetic score"
        raise ValueError(
            f"this {name} {why}: that is the SDXL refiner's layout, which sdlab does not support. sdlab runs "
            f"{SUPPORTED}: SDXL base, with both text encoders and both tokenizers"
        )


def check_tokenizers(pipe, prompts) -> None:
    """A clear error naming the pipeline unless its two tokenizers put every word of each prompt at the same
    token positions (the UNet sees both encoders' states per position, so a word's positions must be one)."""
    for prompt in [prompts] if isinstance(prompts, str) else prompts:
        problem = align.word_disagreement(pipe.tokenizer, pipe.tokenizer_2, prompt)
        if problem is not None:
            raise ValueError(
                f"the two tokenizers of this {type(pipe).__name__} split the prompt into different words: "
                f"{problem}. Capture and edits need both to read every word at the same token positions (SDXL "
                "base's two CLIP tokenizers do); use the tokenizers the pipeline was trained with"
            )
