"""Load a Janus-Pro checkpoint (hub id or local folder) or build a tiny random one, ready to sample.

Real checkpoints (deepseek-community/Janus-Pro-1B, -7B) load in bf16 on a GPU. With no model named,
`tiny` builds a small random Janus from config and an offline byte-level tokenizer: same classes,
same code path, no download, and its images are noise. `save_tiny` writes it as a checkpoint folder
so tests exercise `from_pretrained` exactly as a real model would.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger("twig")

TINY = "tiny"
SPECIALS = {"bos_token": "<｜begin▁of▁sentence｜>", "pad_token": "<｜▁pad▁｜>",
            "eos_token": "<｜end▁of▁sentence｜>"}
IMAGE_SPECIALS = {"boi_token": "<begin_of_image>", "eoi_token": "<end_of_image>",
                  "image_token": "<image_placeholder>"}


class ModelError(ValueError):
    """The model or device asked for cannot be used; the message says why and what to do."""


@dataclass
class LoadedModel:
    model: Any                 # JanusForConditionalGeneration, eval mode
    tokenizer: Any
    name: str
    device: torch.device
    dtype: torch.dtype

    @property
    def grid(self) -> tuple[int, int]:
        n = int(self.model.config.vision_config.num_image_tokens)
        side = math.isqrt(n)
        if side * side != n:
            raise ModelError(f"{self.name}: {n} image tokens do not form a square grid")
        return side, side


def tiny_tokenizer():
    """A byte-level tokenizer with Janus's special tokens: any text round-trips, nothing to fetch."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    specials = [*SPECIALS.values(), *IMAGE_SPECIALS.values()]
    vocab = {tok: i for i, tok in enumerate(specials)}
    for ch in sorted(pre_tokenizers.ByteLevel.alphabet()):
        vocab[ch] = len(vocab)
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    core.decoder = decoders.ByteLevel()
    core.add_special_tokens(specials)
    return PreTrainedTokenizerFast(tokenizer_object=core, **SPECIALS, extra_special_tokens=IMAGE_SPECIALS)


def tiny_config(grid: int = 24, hidden: int = 64, layers: int = 2, codebook: int = 64, vq_levels: int = 2):
    """A small JanusConfig with the real model's structure (the VQ decoder upsamples 2**vq_levels)."""
    from transformers import JanusConfig

    tok = tiny_tokenizer()
    ids = {name: tok.convert_tokens_to_ids(t) for name, t in {**SPECIALS, **IMAGE_SPECIALS}.items()}
    text = dict(model_type="llama", vocab_size=len(tok), hidden_size=hidden, intermediate_size=2 * hidden,
                num_hidden_layers=layers, num_attention_heads=4, num_key_value_heads=2,
                max_position_embeddings=4096, bos_token_id=ids["bos_token"], eos_token_id=ids["eos_token"],
                pad_token_id=ids["pad_token"])
    vision = dict(image_size=grid * 16, patch_size=16, num_image_tokens=grid * grid, hidden_size=32,
                  projection_dim=hidden, num_hidden_layers=1, num_attention_heads=2, mlp_ratio=2)
    vq = dict(embed_dim=8, num_embeddings=codebook, latent_channels=8, base_channels=32,
              channel_multiplier=[1] * (vq_levels + 1), num_res_blocks=1, num_patches=grid,
              projection_dim=hidden, image_token_embed_dim=hidden)
    return JanusConfig(text_config=text, vision_config=vision, vq_config=vq, image_token_id=ids["image_token"]), ids


# Janus-Pro's real shapes (transformers `JanusConfig` kwargs), for benchmarks with random weights
# where the checkpoints cannot be fetched. Taken from deepseek-community/Janus-Pro-{1B,7B}'s
# config.json as converted by transformers' convert_janus_weights_to_hf.py; vision and VQ keep
# transformers' defaults, which are Janus-Pro's.
JANUS_PRO_SHAPES: dict[str, dict[str, Any]] = {
    "1b": {"text": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=24, num_attention_heads=16,
                        num_key_value_heads=16), "projection": 2048},
    "7b": {"text": dict(hidden_size=4096, intermediate_size=11008, num_hidden_layers=30, num_attention_heads=32,
                        num_key_value_heads=32), "projection": 4096},
}


def janus_pro_config(size: str):
    """A JanusConfig with Janus-Pro-1B or -7B's shapes (vocab 102400, 16384 image codes, 24x24 grid)."""
    from transformers import JanusConfig

    shape = JANUS_PRO_SHAPES[size]
    text = dict(model_type="llama", vocab_size=102400, max_position_embeddings=16384, rms_norm_eps=1e-6,
                bos_token_id=100000, eos_token_id=100001, pad_token_id=100002, tie_word_embeddings=False,
                **shape["text"])
    proj = shape["projection"]
    return JanusConfig(text_config=text, vision_config=dict(projection_dim=proj, num_image_tokens=576),
                       vq_config=dict(projection_dim=proj, image_token_embed_dim=proj),
                       image_token_id=100581, tie_word_embeddings=False)


def tiny_model(seed: int = 0, **shape: int):
    """(model, tokenizer): a random JanusForConditionalGeneration from `tiny_config(**shape)`."""
    from transformers import JanusForConditionalGeneration

    config, ids = tiny_config(**shape)
    torch.manual_seed(seed)
    model = JanusForConditionalGeneration(config).eval()
    gen = model.generation_config      # real checkpoints ship these in generation_config.json
    gen.generation_kwargs = {"boi_token_id": ids["boi_token"]}
    gen.pad_token_id, gen.bos_token_id, gen.eos_token_id = ids["pad_token"], ids["bos_token"], ids["eos_token"]
    return model, tiny_tokenizer()


def save_tiny(path: str | Path, seed: int = 0, **shape: int) -> Path:
    """Write a tiny random model + tokenizer as a checkpoint folder `load_model` can read."""
    model, tok = tiny_model(seed, **shape)
    path = Path(path)
    model.save_pretrained(path)
    tok.save_pretrained(path)
    return path


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelError(f"--device {device} was asked for, but no CUDA GPU is visible to torch "
                         "(torch.cuda.is_available() is False); use --device cpu or auto")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise ModelError(f"unknown device {device!r} ({e})") from None


def pick_dtype(dtype: str, device: torch.device) -> torch.dtype:
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    table = {"bf16": torch.bfloat16, "bfloat16": torch.bfloat16, "fp16": torch.float16,
             "float16": torch.float16, "fp32": torch.float32, "float32": torch.float32}
    if dtype not in table:
        raise ModelError(f"unknown dtype {dtype!r}; choose auto, bf16, fp16 or fp32")
    return table[dtype]


def load_model(name: str | None = None, device: str = "auto", dtype: str = "auto") -> LoadedModel:
    """A Janus model ready for sampling: `None`/`tiny`, a local folder, or a Hub id."""
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    if name in (None, "", TINY):
        model, tok = tiny_model()
        return LoadedModel(model.to(dev, dt), tok, TINY, dev, dt)
    _check_janus(name)
    from transformers import AutoTokenizer, JanusForConditionalGeneration

    if dev.type == "cpu" and not Path(name).is_dir():
        log.warning("loading %s on CPU: a real Janus-Pro checkpoint wants a GPU (--device cuda)", name)
    try:
        model = JanusForConditionalGeneration.from_pretrained(name, dtype=dt).to(dev).eval()
        tok = AutoTokenizer.from_pretrained(name)
    except OSError as e:
        raise ModelError(f"cannot load model {name!r}: {_first_line(e)}") from None
    return LoadedModel(model, tok, name, dev, dt)


def _check_janus(name: str) -> None:
    """Fail early and clearly on a folder or Hub repo that is not a Janus checkpoint."""
    path = Path(name)
    if path.exists():
        cfg = path / "config.json"
        if not cfg.is_file():
            raise ModelError(f"model folder {name} has no config.json; is it a checkpoint folder?")
        text = cfg.read_text(encoding="utf-8", errors="replace")
    else:
        if name.count("/") != 1 or name.startswith(("/", ".")):
            raise ModelError(f"unknown model {name!r}: not a local folder and not a Hub id "
                             "(owner/name, e.g. deepseek-community/Janus-Pro-7B)")
        from huggingface_hub import hf_hub_download
        from huggingface_hub.errors import (
            HfHubHTTPError,
            LocalEntryNotFoundError,
            RepositoryNotFoundError,
        )

        try:
            text = Path(hf_hub_download(name, "config.json")).read_text(encoding="utf-8")
        except RepositoryNotFoundError:
            raise ModelError(f"unknown model {name!r}: the Hub has no such repository "
                             "(or it is gated/private and no token allows it)") from None
        except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as e:
            raise ModelError(f"cannot fetch {name!r} from the Hub and it is not cached here "
                             f"({_first_line(e)})") from None
    try:
        kind = json.loads(text).get("model_type")
    except ValueError:
        raise ModelError(f"{name}: config.json is not valid JSON") from None
    if kind != "janus":
        raise ModelError(f"{name} is a {kind!r} model; twig generate needs a Janus checkpoint "
                         "(model_type 'janus', e.g. deepseek-community/Janus-Pro-1B)")


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__
