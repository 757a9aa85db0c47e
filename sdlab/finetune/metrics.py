"""Measuring validation images: prompt fidelity and style.

On the toy world both are exact: fidelity is whether the evaluator reads the prompt's object, color and
background all three as asked (1 or 0 per picture: a house drawn as a blob is not two thirds faithful; each
part is in the table too, to see which goes first); style is the evaluator's `outline_score` (the share of the
object's border drawn as a dark outline, also where a generation tints it with the fill: ~0 for plain renders,
~1 for the creature style; the toy probes are one plain color each, so a dark ring around them can only be
that outline). On real data: CLIP score of image and prompt and CLIP similarity to the training images, when
CLIP weights are available locally; otherwise skipped, with one message saying why.
"""

from __future__ import annotations

import re

import torch

from ..toyworld import COLORS, OBJECTS, PLACES

DEFAULT_CLIP = "openai/clip-vit-base-patch16"
"""CLIP weights used for real-data metrics when the config names none (must be in the local hub cache)."""
ATTRIBUTES = ("object", "color", "background")
"""The prompt attributes that must all be read right for a toy-world picture to count as faithful."""


def parse_toy_prompt(prompt: str) -> dict | None:
    """The object, color and background a toy-world caption asks for, or None if it is not one."""
    words = re.findall(r"[a-z]+", prompt.lower())
    objects = [w for w in words if w in OBJECTS]
    colors = [w for w in words if w in COLORS]
    text = " ".join(words).replace("on a bumpy road", "on a road")
    places = [bg for bg, phrase in PLACES.items() if re.search(rf"\b{phrase}\b", text)]
    if len(objects) != 1 or len(colors) != 1 or len(places) != 1:
        return None
    return {"object": objects[0], "color": colors[0], "background": places[0]}


class ToyWorldMetrics:
    """Fidelity and style of toy-world generations, read by `sdlab.toyworld.analyze`."""

    name = "toyworld"
    columns = ("object_ok", "color_ok", "background_ok", "fidelity", "style")

    def __init__(self, analyze=None):
        if analyze is None:
            from ..toyworld import analyze  # the evaluator; imported late so the rest works without it
        self.analyze = analyze

    def measure(self, images, prompts) -> list[dict]:
        rows = []
        for image, prompt in zip(images, prompts):
            want, reading = parse_toy_prompt(prompt), self.analyze(image)
            row = {f"{a}_ok": float(getattr(reading, a) == want[a]) for a in ATTRIBUTES}
            row["fidelity"] = float(all(row[f"{a}_ok"] for a in ATTRIBUTES))
            row["style"] = float(reading.outline_score)
            rows.append(row)
        return rows


class ClipMetrics:
    """CLIP score (100 x cosine of image and prompt embeddings, floored at 0, as torchmetrics' `CLIPScore`);
    fidelity is it / 100; style is the cosine similarity to the mean CLIP embedding of training images."""

    name = "clip"
    columns = ("clip_score", "fidelity", "style")

    def __init__(self, model: str, reference_images, device="cpu"):
        from transformers import CLIPModel, CLIPProcessor

        self.model = CLIPModel.from_pretrained(model, local_files_only=True).to(device).eval()
        self.processor = CLIPProcessor.from_pretrained(model, local_files_only=True)
        self.device = device
        self.reference = None
        if len(reference_images):
            with torch.no_grad():
                ref = self._images(reference_images).mean(0)
            self.reference = ref / ref.norm()

    def _images(self, images) -> torch.Tensor:
        px = self.processor(images=list(images), return_tensors="pt")["pixel_values"].to(self.device)
        emb = self.model.get_image_features(pixel_values=px)
        emb = getattr(emb, "pooler_output", emb)
        return emb / emb.norm(dim=-1, keepdim=True)

    @torch.no_grad()
    def measure(self, images, prompts) -> list[dict]:
        img = self._images(images)
        tok = self.processor(text=list(prompts), return_tensors="pt", padding=True, truncation=True).to(self.device)
        txt = self.model.get_text_features(input_ids=tok["input_ids"], attention_mask=tok["attention_mask"])
        txt = getattr(txt, "pooler_output", txt)
        txt = txt / txt.norm(dim=-1, keepdim=True)
        score = (100 * (img * txt).sum(-1)).clamp(min=0)
        style = img @ self.reference if self.reference is not None else torch.full_like(score, float("nan"))
        return [{"clip_score": float(s), "fidelity": float(s) / 100, "style": float(st)} for s, st in zip(score, style)]


def pick_metrics(mode: str, prompts, clip_model: str | None, reference_images=None, device="cpu"):
    """The metrics for these validation prompts, or (None, why) when there are none to compute."""
    if mode == "none":
        return None, "metrics are off (metrics='none')"
    toy = all(parse_toy_prompt(p) is not None for p in prompts)
    if mode == "toyworld" or (mode == "auto" and toy):
        if not toy:
            from .probes import check_toy_probes

            check_toy_probes(prompts)  # raises: which prompts, and what to do
        try:
            return ToyWorldMetrics(), None
        except ImportError as e:
            return None, f"the toy-world evaluator is not available ({e})"
    model = clip_model or DEFAULT_CLIP
    try:
        return ClipMetrics(model, reference_images or [], device), None
    except Exception as e:  # no local weights, no network: skip with one message
        return None, (
            f"CLIP metrics skipped: no local CLIP weights for {model!r} ({type(e).__name__}). Download them once "
            "(huggingface-cli download ...) or pass clip_model=FOLDER; images and grids are still saved."
        )
