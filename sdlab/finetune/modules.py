"""The parts of a finetuning run around the loop: which weights train (full or LoRA), the optimizer, the LR
schedule, the EMA, how they are checkpointed, how validation samples, and the final fused pipeline.

Checkpoints hold the trained weights (and the EMA) as safetensors written by an accelerate save hook: only
the weights that train (the LoRA adapters, or the full UNet), never the frozen ones.
"""

from __future__ import annotations

import json
from contextlib import contextmanager
from pathlib import Path

import torch
from diffusers import DDIMScheduler, DDPMScheduler, StableDiffusionPipeline
from safetensors.torch import load_file, save_file

from .config import TEXT_LORA_TARGETS, FinetuneConfig, FinetuneError
from .probes import TOY_PROBE_CANDIDATES, calibrate_probes, check_toy_probes, default_prompts, toy_probes
from .validation import Progression, recorded_prompts


def _add_lora(model, config: FinetuneConfig, seed: int, targets):
    """Inject LoRA adapters (peft) into `model`'s target modules; only they train."""
    from peft import LoraConfig, inject_adapter_in_model

    torch.manual_seed(seed)  # the adapters' init is part of the run's seed
    lora = LoraConfig(r=config.lora_rank, lora_alpha=config.lora_alpha or config.lora_rank,
                      init_lora_weights="gaussian", target_modules=list(targets))
    try:
        inject_adapter_in_model(lora, model)
    except ValueError as e:
        raise FinetuneError(f"LoRA targets {list(targets)} not found in {type(model).__name__}: {e}") from e
    for name, p in model.named_parameters():
        p.requires_grad_("lora_" in name)


def fuse_lora(model):
    """Merge peft LoRA layers into their base weights and remove them: a plain model again."""
    from diffusers.utils.peft_utils import recurse_remove_peft_layers
    from peft.tuners.tuners_utils import BaseTunerLayer

    for module in model.modules():
        if isinstance(module, BaseTunerLayer):
            module.merge()
    model = recurse_remove_peft_layers(model)
    for attr in ("_hf_peft_config_loaded", "peft_config"):
        if hasattr(model, attr):
            try:
                delattr(model, attr)
            except AttributeError:
                setattr(model, attr, False if attr.startswith("_") else None)
    return model


class TrainParts:
    """Models, optimizer, schedule and EMA of one run, prepared by `accelerator`."""

    def __init__(self, pipe: StableDiffusionPipeline, config: FinetuneConfig, accelerator):
        from diffusers.optimization import get_scheduler
        from diffusers.training_utils import EMAModel

        self.pipe, self.config, self.accelerator = pipe, config, accelerator
        device = accelerator.device
        self.weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(accelerator.mixed_precision,
                                                                                 torch.float32)
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        unet, text_encoder = pipe.unet, pipe.text_encoder
        pipe.vae.requires_grad_(False)
        unet.requires_grad_(config.lora_rank == 0)
        text_encoder.requires_grad_(config.train_text_encoder and config.lora_rank == 0)
        trained = [unet] + ([text_encoder] if config.train_text_encoder else [])
        if config.lora_rank:
            for i, m in enumerate(trained):
                _add_lora(m, config, config.seed + i, config.lora_targets if i == 0 else TEXT_LORA_TARGETS)
        if config.gradient_checkpointing:
            unet.enable_gradient_checkpointing()
            if config.train_text_encoder:
                text_encoder.gradient_checkpointing_enable()
        for m in trained:
            m.train()
        self.names = [[n for n, p in m.named_parameters() if p.requires_grad] for m in trained]
        self.params = [p for m in trained for p in m.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(self.params, lr=config.learning_rate, betas=tuple(config.adam_betas),
                                           weight_decay=config.weight_decay, eps=config.adam_epsilon)
        schedule = "constant_with_warmup" if config.lr_schedule == "constant" else "cosine"
        self.lr_scheduler = get_scheduler(schedule, self.optimizer, num_warmup_steps=config.warmup_steps,
                                          num_training_steps=config.max_steps)
        self.ema = EMAModel(self.params, decay=config.ema_decay) if config.use_ema else None
        frozen = [pipe.vae] + ([] if config.train_text_encoder else [text_encoder])
        for m in frozen:  # frozen parts in the compute dtype (a cast only under mixed precision)
            m.to(device) if self.weight_dtype == torch.float32 else m.to(device, dtype=self.weight_dtype)
            m.eval()
        accelerator.register_save_state_pre_hook(self._save_hook)
        accelerator.register_load_state_pre_hook(self._load_hook)
        accelerator.register_for_checkpointing(self.lr_scheduler)
        prepared = accelerator.prepare(*trained, self.optimizer)
        self.trained, self.optimizer = list(prepared[:-1]), prepared[-1]
        self.unet = self.trained[0]
        self.text_encoder = self.trained[1] if config.train_text_encoder else text_encoder
        if self.ema is not None:
            self.ema.to(device)

    # -- checkpoint hooks: trained weights and EMA as safetensors ------------------------------------------
    def _save_hook(self, models, weights, output_dir):
        if self.accelerator.is_main_process:
            for i, model in enumerate(models):
                model = self.accelerator.unwrap_model(model)
                named = dict(model.named_parameters())
                save_file({n: named[n].detach().contiguous().cpu() for n in self.names[i]},
                          str(Path(output_dir) / f"trained_{i}.safetensors"))
            if self.ema is not None:
                state = self.ema.state_dict()
                shadow = state.pop("shadow_params")
                save_file({str(k): t.contiguous().cpu() for k, t in enumerate(shadow)},
                          str(Path(output_dir) / "ema.safetensors"))
                (Path(output_dir) / "ema.json").write_text(json.dumps(state))
        weights.clear()  # accelerate must not also save the full models

    def _load_hook(self, models, input_dir):
        for i, model in enumerate(models):
            model = self.accelerator.unwrap_model(model)
            tensors = load_file(str(Path(input_dir) / f"trained_{i}.safetensors"))
            named = dict(model.named_parameters())
            with torch.no_grad():
                for n in self.names[i]:
                    named[n].copy_(tensors[n])
        if self.ema is not None:
            tensors = load_file(str(Path(input_dir) / "ema.safetensors"))
            state = json.loads((Path(input_dir) / "ema.json").read_text())
            state["shadow_params"] = [tensors[str(k)].to(self.accelerator.device) for k in range(len(tensors))]
            self.ema.load_state_dict(state)
        models.clear()

    # -- one step's inputs ----------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_images(self, pixels, generator):
        vae = self.pipe.vae
        dist = vae.encode(pixels.to(self.weight_dtype)).latent_dist
        latents = dist.sample(generator=generator)
        shift = getattr(vae.config, "shift_factor", None) or 0.0
        return ((latents - shift) * vae.config.scaling_factor).float()

    def encode_text(self, captions):
        tok = self.pipe.tokenizer
        ids = tok(captions, padding="max_length", max_length=tok.model_max_length, truncation=True,
                  return_tensors="pt").input_ids.to(self.accelerator.device)
        with torch.set_grad_enabled(self.config.train_text_encoder):
            return self.text_encoder(ids)[0]

    # -- validation and output -------------------------------------------------------------------------------
    def _pipeline(self, unet, text_encoder):
        return StableDiffusionPipeline(
            vae=self.pipe.vae, text_encoder=text_encoder, tokenizer=self.pipe.tokenizer, unet=unet,
            scheduler=DDIMScheduler.from_config(self.pipe.scheduler.config), safety_checker=None,
            feature_extractor=None, requires_safety_checker=False,
        )

    def progression(self, folder: Path, resolution: int, data, resumed: bool) -> Progression:
        """The run's validation: its prompts and probes (`sdlab.finetune.probes`; a resumed run reuses the ones it
        recorded), seeds and metrics."""
        from .metrics import ToyWorldMetrics, pick_metrics

        cfg = self.config
        captions = [data.caption(i) for i in range(len(data))]
        recorded = recorded_prompts(folder) if resumed else None
        prompts, probes = recorded or default_prompts(resolution, captions)
        prompts = tuple(cfg.validation_prompts or prompts)
        probes = tuple(cfg.probe_prompts if cfg.probe_prompts is not None else probes)
        if cfg.metrics == "toyworld":
            check_toy_probes(prompts + probes)
        metrics = None
        if self.accelerator.is_main_process:
            refs = [data.image(i) for i in range(min(len(data), 32))]
            metrics, why = pick_metrics(cfg.metrics, prompts + probes, cfg.clip_model, refs, self.accelerator.device)
            if why:
                print(f"sdlab finetune: {why}")
        if not resumed and cfg.probe_prompts is None and probes and isinstance(metrics, ToyWorldMetrics):
            # yoda must be yoda before finetuning: keep the out-of-domain candidates the base model draws right
            candidates = toy_probes(captions, len(TOY_PROBE_CANDIDATES))
            with self._sampling() as pipe:
                probes, right = calibrate_probes(pipe, candidates, len(probes), steps=cfg.validation_inference_steps,
                                                 guidance=cfg.guidance_scale, metrics=metrics)
            if right < len(probes):
                print(f"sdlab finetune: the base model draws only {right} of the {len(probes)} probes right on the "
                      "calibration seeds, so the probes start below full fidelity; pass probe_prompts to choose")
        return Progression(folder, prompts, probes, seed=cfg.validation_seed,
                           inference_steps=cfg.validation_inference_steps, guidance_scale=cfg.guidance_scale,
                           metrics=metrics, samples=cfg.validation_samples)

    @contextmanager
    def _sampling(self):
        """A pipeline of the current weights (EMA weights when EMA is on) in eval mode, for the main process."""
        acc = self.accelerator
        unet, text_encoder = acc.unwrap_model(self.unet), acc.unwrap_model(self.text_encoder)
        if self.ema is not None:
            self.ema.store(self.params)
            self.ema.copy_to(self.params)
        was = [m.training for m in self.trained]
        unet.eval()
        text_encoder.eval()
        pipe = self._pipeline(unet, text_encoder)
        pipe.set_progress_bar_config(disable=True)
        try:
            with torch.no_grad(), acc.autocast():
                yield pipe
        finally:
            for m, t in zip(self.trained, was):
                m.train(t)
            if self.ema is not None:
                self.ema.restore(self.params)

    def trained_weights(self) -> list[dict]:
        """What trains, as {name: tensor} per trained model (EMA weights when EMA is on), copied to the CPU."""
        acc = self.accelerator
        if self.ema is not None:
            self.ema.store(self.params)
            self.ema.copy_to(self.params)
        try:
            out = []
            for i, m in enumerate(self.trained):
                named = dict(acc.unwrap_model(m).named_parameters())
                out.append({n: named[n].detach().float().cpu().clone() for n in self.names[i]})
            return out
        finally:
            if self.ema is not None:
                self.ema.restore(self.params)

    def validate(self, progression: Progression, step: int, loss: float | None = None) -> None:
        """Sample the validation prompts (with EMA weights when EMA is on) on the main process."""
        if self.accelerator.is_main_process:
            with self._sampling() as pipe:
                progression.run(step, pipe, {"loss": loss} if loss is not None else {})
        self.accelerator.wait_for_everyone()

    def final_pipeline(self) -> StableDiffusionPipeline:
        """The finetuned pipeline in float32: EMA weights if EMA is on, LoRA fused into the base weights."""
        acc = self.accelerator
        if self.ema is not None:
            self.ema.copy_to(self.params)
        unet = acc.unwrap_model(self.unet)
        text_encoder = acc.unwrap_model(self.text_encoder)
        if self.config.lora_rank:
            unet = fuse_lora(unet)
            if self.config.train_text_encoder:
                text_encoder = fuse_lora(text_encoder)
        pipe = self._pipeline(unet.float(), text_encoder.float())
        pipe.vae.float()
        return pipe.to("cpu")
