"""`load_pipeline` on saved tiny pipelines: loads, clear errors naming what is wrong, device and dtype."""

import json
import os
import warnings

import pytest
import torch
from diffusers import StableDiffusionPipeline

import sdlab
from sdlab.models import check_prompt_length, pick_device, pick_dtype


def test_loads_a_saved_folder(tiny_pipeline_dir):
    pipe = sdlab.load_pipeline(tiny_pipeline_dir, device="cpu")
    assert isinstance(pipe, StableDiffusionPipeline)
    assert pipe.device.type == "cpu" and pipe.unet.dtype == torch.float32
    assert pipe.safety_checker is None
    image = pipe("a red cat on grass", num_inference_steps=2, generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (64, 64)


def test_dtype_is_honoured(tiny_pipeline_dir):
    pipe = sdlab.load_pipeline(tiny_pipeline_dir, device="cpu", dtype="bfloat16")
    assert pipe.unet.dtype == torch.bfloat16 and pipe.vae.dtype == torch.bfloat16


def test_missing_component_folder_is_named(tiny_pipeline_copy):
    import shutil

    shutil.rmtree(tiny_pipeline_copy / "unet")
    with pytest.raises(FileNotFoundError, match="unet"):
        sdlab.load_pipeline(tiny_pipeline_copy, device="cpu")


def test_missing_model_index_is_explained(tiny_pipeline_copy):
    (tiny_pipeline_copy / "model_index.json").unlink()
    with pytest.raises(FileNotFoundError, match="model_index.json"):
        sdlab.load_pipeline(tiny_pipeline_copy, device="cpu")


def test_corrupt_weights_file_is_named(tiny_pipeline_copy):
    weights = next((tiny_pipeline_copy / "vae").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:200])
    with pytest.raises(ValueError, match=weights.name) as err:
        sdlab.load_pipeline(tiny_pipeline_copy, device="cpu")
    assert "vae" in str(err.value)


def test_pickled_weights_are_refused_without_unpickling(tiny_pipeline_copy, tmp_path):
    folder = tiny_pipeline_copy / "unet"
    for p in folder.glob("*.safetensors"):
        p.unlink()
    # a pickle that would leave a trace if it were ever loaded
    trace = tmp_path / "unpickled"
    payload = type("Payload", (), {"__reduce__": lambda self: (open, (str(trace), "w"))})()
    torch.save({"x": payload}, folder / "diffusion_pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="safetensors") as err:
        sdlab.load_pipeline(tiny_pipeline_copy, device="cpu")
    assert "diffusion_pytorch_model.bin" in str(err.value)
    assert not trace.exists()


@pytest.mark.parametrize("name", ["StableDiffusion3Pipeline", "StableDiffusionXLImg2ImgPipeline"])
def test_unsupported_folder_is_refused_clearly(tiny_pipeline_copy, name):
    index_path = tiny_pipeline_copy / "model_index.json"
    index = json.loads(index_path.read_text())
    index["_class_name"] = name
    index_path.write_text(json.dumps(index))
    with pytest.raises(ValueError, match=f"holds a {name}; sdlab supports StableDiffusionPipeline") as err:
        sdlab.load_pipeline(tiny_pipeline_copy, device="cpu")
    assert "StableDiffusionXLPipeline (SDXL base)" in str(err.value)


def test_hub_id_offline_names_the_alternatives():
    assert os.environ.get("HF_HUB_OFFLINE") == "1"  # set by conftest: tests never touch the network
    with pytest.raises(OSError) as err:
        sdlab.load_pipeline("CompVis/stable-diffusion-v1-4", device="cpu")
    message = str(err.value)
    assert "CompVis/stable-diffusion-v1-4" in message and "local diffusers folder" in message and "model=None" in message


def test_neither_folder_nor_hub_id():
    with pytest.raises(FileNotFoundError, match="neither an existing folder nor a hub id"):
        sdlab.load_pipeline("./no/such/folder", device="cpu")


def test_a_file_is_not_a_pipeline(tmp_path):
    path = tmp_path / "model.safetensors"
    path.write_bytes(b"x")
    with pytest.raises(NotADirectoryError):
        sdlab.load_pipeline(path, device="cpu")


def test_device_and_dtype_choice(monkeypatch):
    assert pick_device("cpu") == torch.device("cpu")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert pick_device() == torch.device("cuda")
    assert pick_dtype(torch.device("cuda")) == torch.float16
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: True)
    assert pick_device() == torch.device("mps")
    assert pick_dtype(torch.device("mps")) == torch.float32  # fp16 only on CUDA
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert pick_device() == torch.device("cpu") and pick_dtype(torch.device("cpu")) == torch.float32
    assert pick_dtype(torch.device("cpu"), "float16") == torch.float16


def test_long_prompts_warn_like_diffusers():
    from sdlab.toymodel import build_tokenizer

    tokenizer = build_tokenizer()
    short = "a red cat on grass"
    long = " ".join(["a red cat on grass"] * 20)  # 100 words, over the 77-token window
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert check_prompt_length(tokenizer, short) == [""]
    with pytest.warns(UserWarning, match="77") as record:
        dropped = check_prompt_length(tokenizer, [short, long])
    assert len(record) == 1
    assert dropped[0] == "" and dropped[1].split()[-5:] == short.split()
    kept = tokenizer(long, truncation=True, max_length=77).input_ids
    assert len(tokenizer(long).input_ids) == len(kept) + len(tokenizer(dropped[1], add_special_tokens=False).input_ids)
