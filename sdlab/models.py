"""Loading Stable Diffusion pipelines: the shipped toy model, a local diffusers folder, or a hub id.

The same `load_pipeline` serves the toy model and real SD 1.x / 2.x weights; everything else in sdlab takes
the pipeline it returns.
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
from diffusers import StableDiffusionPipeline  # noqa: E402

TOY_MODEL_DIR = Path(__file__).parent / "toymodel" / "weights"
"""Where the shipped toy model lives: a diffusers pipeline folder (safetensors weights)."""

SUPPORTED_PIPELINES = ("StableDiffusionPipeline",)


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
        raise ValueError(
            f"{folder} holds a {name}; sdlab supports {', '.join(SUPPORTED_PIPELINES)} (SD 1.x / 2.x) for now"
        )
    for component, spec in index.items():
        if component.startswith("_") or not isinstance(spec, list) or spec[0] is None:
            continue
        sub = folder / component
        if not sub.is_dir():
            raise FileNotFoundError(f"{folder} lacks the component folder {sub} listed in {index_path}")
        if component in ("tokenizer", "scheduler", "feature_extractor"):
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


def load_pipeline(model=None, *, device=None, dtype=None) -> StableDiffusionPipeline:
    """Load a Stable Diffusion pipeline.

    Args:
        model: None for the toy model shipped with sdlab; a local diffusers folder; or a hub id such as
            "CompVis/stable-diffusion-v1-4" (needs network or a local hub cache).
        device: torch device; default cuda, then mps, then cpu.
        dtype: default float16 on CUDA, float32 elsewhere.

    The safety checker is off: sdlab is a research tool for looking inside the model.
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
        with warnings.catch_warnings():  # newer diffusers rename torch_dtype to dtype; older know only torch_dtype
            warnings.filterwarnings("ignore", message=".*torch_dtype.*is deprecated", category=FutureWarning)
            pipe = StableDiffusionPipeline.from_pretrained(
                source,
                torch_dtype=dtype,
                use_safetensors=True,
                safety_checker=None,
                requires_safety_checker=False,
                local_files_only=local,
            )
    except (OSError, ValueError) as e:
        if local:
            raise
        raise OSError(
            f"could not load {model!r} from the hub (no network or not cached here: {type(e).__name__}). "
            "Alternatives: a local diffusers folder (`save_pretrained` output), or model=None for the shipped "
            "toy model."
        ) from e
    if type(pipe).__name__ not in SUPPORTED_PIPELINES:
        raise ValueError(f"{model!r} is a {type(pipe).__name__}; sdlab supports {', '.join(SUPPORTED_PIPELINES)}")
    return pipe.to(device)


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
