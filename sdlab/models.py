"""Loading Stable Diffusion pipelines: the shipped toy model, a local diffusers folder, or a hub id.

The same `load_pipeline` serves the toy model, real SD 1.x / 2.x weights and SDXL base; everything else in
sdlab takes the pipeline it returns.
"""

from __future__ import annotations

import json
import logging
import re
import warnings
from pathlib import Path


class _NoImageProcessorFallbackNotice(logging.Filter):
    """Drops transformers' notice that an image processor (e.g. `CLIPImageProcessor`) falls back to its PIL
    version because torchvision is missing. Importing diffusers' pipelines resolves those classes and logs it
    once per class on stderr; sdlab loads no image processor (no safety checker, no feature extractor), so it
    concerns nothing here. Every other transformers message passes."""

    NOTICE = re.compile(r"`\w+ImageProcessor` requires torchvision \(not installed\); falling back to `\w+Pil`")

    def filter(self, record: logging.LogRecord) -> bool:
        return not self.NOTICE.match(str(record.msg))


# Before diffusers is imported: the notice is logged during that import (transformers 5.x lazy module).
logging.getLogger("transformers.utils.import_utils").addFilter(_NoImageProcessorFallbackNotice())

import torch  # noqa: E402
from diffusers import StableDiffusionPipeline, StableDiffusionXLPipeline  # noqa: E402

TOY_MODEL_DIR = Path(__file__).parent / "toymodel" / "weights"
"""Where the shipped toy model lives: a diffusers pipeline folder (safetensors weights)."""

PIPELINE_CLASSES = {
    "StableDiffusionPipeline": StableDiffusionPipeline,
    "StableDiffusionXLPipeline": StableDiffusionXLPipeline,
}
"""The pipelines sdlab loads, captures and edits, by the class name a folder's `model_index.json` gives."""

SUPPORTED_PIPELINES = tuple(PIPELINE_CLASSES)

SUPPORTED = "StableDiffusionPipeline (SD 1.x / 2.x, the toy model) and StableDiffusionXLPipeline (SDXL base)"
"""What error messages say sdlab supports."""


def pick_device(device=None) -> torch.device:
    """`device` if given, else cuda, then mps, then cpu."""
    if device is not None:
        return torch.device(device)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def pick_dtype(device: torch.device, dtype=None) -> torch.dtype:
    """`dtype` if given, else float16 on CUDA and float32 elsewhere."""
    if dtype is not None:
        return getattr(torch, dtype) if isinstance(dtype, str) else dtype
    return torch.float16 if device.type == "cuda" else torch.float32


def check_pipeline_folder(folder: Path) -> None:
    """Raise a clear error if `folder` is not a loadable Stable Diffusion pipeline folder.

    Checks that `model_index.json` names a supported pipeline, that every component folder it lists exists,
    that model weights are present as safetensors, and that each safetensors file opens.
    """
    from safetensors import safe_open

    index_path = folder / "model_index.json"
    if not index_path.is_file():
        raise FileNotFoundError(
            f"{folder} is not a diffusers pipeline folder: {index_path} is missing. Save one with "
            "`pipe.save_pretrained(folder)` or pass a hub id."
        )
    try:
        index = json.loads(index_path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{index_path} is not valid JSON ({e}); re-save the pipeline") from e
    name = index.get("_class_name")
    if name not in SUPPORTED_PIPELINES:
        raise ValueError(f"{folder} holds a {name}; sdlab supports {SUPPORTED}")
    for component, spec in index.items():
        if component.startswith("_") or not isinstance(spec, list) or spec[0] is None:
            continue
        sub = folder / component
        if not sub.is_dir():
            raise FileNotFoundError(f"{folder} lacks the component folder {sub} listed in {index_path}")
        if component in ("tokenizer", "tokenizer_2", "scheduler", "feature_extractor"):
            continue
        weights = sorted(sub.glob("*.safetensors"))
        if not weights:
            pickled = [p.name for p in sub.iterdir() if p.suffix in (".bin", ".ckpt", ".pt", ".pth")]
            hint = f" (found {', '.join(pickled)}: sdlab never unpickles; convert to safetensors)" if pickled else ""
            raise FileNotFoundError(f"{sub} has no .safetensors weights{hint}")
        for path in weights:
            try:
                with safe_open(str(path), framework="pt") as f:
                    for key in f.keys():
                        f.get_slice(key)
            except Exception as e:  # safetensors raises its own error types
                raise ValueError(f"corrupt weights file {path}: {e}") from e


EXTRA_ARGUMENTS = {
    "StableDiffusionPipeline": dict(safety_checker=None, requires_safety_checker=False),
    "StableDiffusionXLPipeline": dict(add_watermarker=False),
}
"""What `load_pipeline` passes each class: no safety checker, no invisible watermark (it changes the pixels)."""


def load_pipeline(model=None, *, device=None, dtype=None) -> StableDiffusionPipeline | StableDiffusionXLPipeline:
    """Load a Stable Diffusion (1.x / 2.x) or SDXL base pipeline.

    Args:
        model: None for the toy model shipped with sdlab; a local diffusers folder; or a hub id such as
            "CompVis/stable-diffusion-v1-4" or "stabilityai/stable-diffusion-xl-base-1.0" (needs network or a
            local hub cache).
        device: torch device; default cuda, then mps, then cpu.
        dtype: default float16 on CUDA, float32 elsewhere.

    The safety checker and SDXL's watermark are off: sdlab is a research tool for looking inside the model.
    A VAE whose config says `force_upcast` (SDXL's overflows in float16) stays in float32 when `dtype` is
    float16; see `keep_vae_in_float32`.
    """
    device = pick_device(device)
    dtype = pick_dtype(device, dtype)
    if model is None:
        folder = TOY_MODEL_DIR
        if not (folder / "model_index.json").is_file():
            raise FileNotFoundError(
                f"the shipped toy model is missing from {folder}; train it with `sdlab train-toy` "
                "or pass a diffusers folder or hub id"
            )
    else:
        folder = Path(model).expanduser()
    if folder.exists():
        if not folder.is_dir():
            raise NotADirectoryError(f"{folder} is a file; pass a diffusers pipeline folder or a hub id")
        check_pipeline_folder(folder)
        source, local = str(folder), True
    else:
        source, local = str(model), False
        if str(model).count("/") != 1 or str(model).startswith((".", "/", "~")):
            raise FileNotFoundError(
                f"{model!r} is neither an existing folder nor a hub id of the form 'owner/name'. "
                "Pass a local diffusers folder, a hub id, or None for the shipped toy model."
            )
    try:
        with warnings.catch_warnings():  # diffusers passes huggingface_hub an argument it has deprecated
            warnings.filterwarnings("ignore", message=".*local_dir_use_symlinks.*", category=UserWarning)
            name = StableDiffusionPipeline.load_config(source, local_files_only=local).get("_class_name")
    except (OSError, ValueError) as e:
        if local:
            raise
        raise _hub_error(model, e) from e
    if name not in PIPELINE_CLASSES:
        raise ValueError(f"{model!r} is a {name}; sdlab supports {SUPPORTED}")
    try:
        with warnings.catch_warnings():  # newer diffusers rename torch_dtype to dtype; older know only torch_dtype
            warnings.filterwarnings("ignore", message=".*torch_dtype.*is deprecated", category=FutureWarning)
            pipe = PIPELINE_CLASSES[name].from_pretrained(
                source, torch_dtype=dtype, use_safetensors=True, local_files_only=local, **EXTRA_ARGUMENTS[name]
            )
    except (OSError, ValueError) as e:
        if local:
            raise
        raise _hub_error(model, e) from e
    keep_vae_in_float32(pipe)
    return pipe.to(device)


def _hub_error(model, e: Exception) -> OSError:
    return OSError(
        f"could not load {model!r} from the hub (no network or not cached here: {type(e).__name__}). "
        "Alternatives: a local diffusers folder (`save_pretrained` output), or model=None for the shipped "
        "toy model."
    )


def keep_vae_in_float32(pipe) -> None:
    """Put an SDXL pipeline's VAE in float32 if it runs in float16 and its config says `force_upcast` (SDXL's
    VAE overflows in float16; SD 1.x / 2.x pipelines are left as they are), and make it take float16 inputs:
    forward pre-hooks cast what enters the decoder (`post_quant_conv`) and the encoder to float32, so the
    pipeline's own `__call__` decodes the UNet's float16 latents as before. The UNet and the text encoders stay
    in float16."""
    vae = pipe.vae
    if not isinstance(pipe, StableDiffusionXLPipeline) or vae is None or vae.dtype != torch.float16:
        return
    if not getattr(vae.config, "force_upcast", False):
        return
    vae.to(torch.float32)
    for module in (vae.post_quant_conv, vae.decoder, vae.encoder):
        if module is not None:
            module.register_forward_pre_hook(_inputs_to_float32)


def _inputs_to_float32(module, args):
    return tuple(a.float() if torch.is_tensor(a) and a.is_floating_point() else a for a in args)


def check_prompt_length(tokenizer, prompts) -> list[str]:
    """Warn, as diffusers does, for each prompt longer than the text encoder's window (77 tokens for CLIP).

    The pipeline silently keeps the first `tokenizer.model_max_length` tokens; this names what is cut.
    Returns, for each prompt, the text that the model will not see ("" when it fits).
    """
    prompts = [prompts] if isinstance(prompts, str) else list(prompts)
    limit = tokenizer.model_max_length
    dropped = []
    for prompt in prompts:
        ids = tokenizer(prompt, truncation=False).input_ids  # with start and end tokens
        cut = tokenizer.decode(ids[limit - 1 : -1]) if len(ids) > limit else ""
        if cut:
            warnings.warn(
                f"prompt of {len(ids)} tokens is longer than the {limit} the text encoder reads; this part is "
                f"truncated: {cut!r}",
                stacklevel=2,
            )
        dropped.append(cut)
    return dropped
