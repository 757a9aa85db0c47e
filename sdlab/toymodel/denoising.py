"""The denoising loss of phases 2, 4 and 6: one batch drawn from the cached latents, with caption dropout (for
classifier-free guidance), padding dropout, and object and attribute isolation of the text states."""

from __future__ import annotations

import functools

import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler

from ..toyworld import OBJECTS
from .architecture import SCHEDULER_CONFIG
from .config import ToyTrainConfig
from .isolation import ISOLATED_ATTRIBUTE, isolate_attribute, isolate_objects, object_token_ids


def padding_positions(ids: torch.Tensor, eos_id: int) -> torch.Tensor:
    """True at the positions after each row's first end token (the padding)."""
    first_eos = (ids == eos_id).int().argmax(dim=1, keepdim=True)
    return torch.arange(ids.shape[1])[None] > first_eos


class DenoisingLoss:
    """`loss(unet, text_encoder, pad_dropout, object_isolation, attribute_isolation)`: the epsilon loss (min-SNR
    weighted) of one batch of `cfg.batch_size` training latents (posterior samples of `lat_mean`, `lat_std`,
    times `scaling`), drawn with `gen`, their captions tokenized once here."""

    def __init__(self, cfg: ToyTrainConfig, tokenizer, captions, lat_mean, lat_std, scaling, device, gen):
        with torch.no_grad():
            ids = tokenizer(list(captions) + [""], padding="max_length", max_length=tokenizer.model_max_length,
                            truncation=True, return_tensors="pt").input_ids
        self.caption_ids, self.empty_ids = ids[:-1], ids[-1:]
        self.pad_positions = padding_positions(self.caption_ids, tokenizer.eos_token_id)
        self.object_ids = object_token_ids(tokenizer, OBJECTS)
        self.tokenizer = tokenizer
        self.noise_sched = DDPMScheduler(**{k: v for k, v in SCHEDULER_CONFIG.items()
                                            if k not in ("set_alpha_to_one", "steps_offset")})
        self.alphas = self.noise_sched.alphas_cumprod.to(device)
        self.cfg, self.lat_mean, self.lat_std, self.scaling = cfg, lat_mean, lat_std, scaling
        self.device, self.gen = device, gen

    @functools.cached_property
    def attribute_ids(self) -> list[int]:
        """The isolated attribute's token, its noun's and the filler's, looked up once it is first isolated."""
        return object_token_ids(self.tokenizer, [*ISOLATED_ATTRIBUTE, "a"]).tolist()

    def __call__(self, unet, text_encoder, pad_dropout: float, object_isolation: float,
                 attribute_isolation: float = 0.0) -> torch.Tensor:
        cfg, gen, device = self.cfg, self.gen, self.device
        idx = torch.randint(len(self.lat_mean), (cfg.batch_size,), generator=gen)
        z0 = (self.lat_mean[idx] + self.lat_std[idx] * torch.randn(self.lat_mean[idx].shape, generator=gen)).to(device)
        z0 = z0 * self.scaling
        noise = torch.randn(z0.shape, generator=gen).to(device)
        t = torch.randint(0, self.noise_sched.config.num_train_timesteps, (cfg.batch_size,), generator=gen).to(device)
        drop = torch.rand(cfg.batch_size, generator=gen) < cfg.cfg_dropout
        tok = torch.where(drop[:, None], self.empty_ids, self.caption_ids[idx])
        states = text_encoder(torch.cat([tok, self.empty_ids]).to(device))[0]
        encode = lambda i: text_encoder(i)[0]  # noqa: E731
        captions, empty = states[:-1], states[-1:]
        if object_isolation:
            captions = isolate_objects(encode, tok, states[:-1], self.object_ids, object_isolation, gen)
        context_rows = torch.zeros(cfg.batch_size, dtype=torch.bool)
        if attribute_isolation:  # those rows keep their objects as stated
            said, word_rows, context_rows = isolate_attribute(encode, tok, states[:-1], *self.attribute_ids,
                                                              attribute_isolation, gen)
            captions = torch.where((word_rows | context_rows)[:, None, None].to(device), said, captions)
        # the context-alone rows keep their padding: it is part of the context that says the attribute
        blank = (torch.rand(cfg.batch_size, generator=gen) < pad_dropout)[:, None] & self.pad_positions[idx]
        blank &= ~context_rows[:, None]
        states = torch.where(blank[..., None].to(device), empty, captions)
        zt = self.noise_sched.add_noise(z0, noise, t)
        pred = unet(zt, t, encoder_hidden_states=states).sample
        snr = self.alphas[t] / (1 - self.alphas[t])
        weight = torch.clamp(snr, max=cfg.min_snr_gamma) / snr
        return (weight * F.mse_loss(pred, noise, reduction="none").mean(dim=(1, 2, 3))).mean()
