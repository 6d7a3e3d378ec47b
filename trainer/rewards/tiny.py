"""Tiny random checkpoints of the reward models, for tests and the offline default.

`tiny_checkpoint(kind)` builds a small, randomly initialised CLIP, BLIP-VQA, GroundingDINO or GIT
from a config (seeded, so every build is byte-identical), a character-level tokenizer of the real
model's own tokenizer class (`CLIPTokenizer`, `BertTokenizer`: in transformers 5 these are
`tokenizers`-library tokenizers built straight from a vocabulary, so nothing is downloaded) and the
matching processor with the PIL image backend (no torchvision), and writes all three with
`save_pretrained`. The rewards load such a folder with exactly the `from_pretrained` calls they use
for a real Hub checkpoint, so tests exercise the one code path.

The folder is written atomically (built in a temporary sibling, then renamed) and reused if it is
already there. Scores from these models are meaningless; only their shapes and plumbing are real.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from transformers import PretrainedConfig

KINDS = ("clip", "blip", "gdino", "git")
VERSION = "v1"
SEED = 1234

# BERT's layout for the ids that models hard-code: GroundingDINO treats 101, 102, 1012 (".") and
# 1029 ("?") as special tokens when it builds its text attention masks.
_BERT_FIXED = {"[PAD]": 0, "[UNK]": 100, "[CLS]": 101, "[SEP]": 102, "[MASK]": 103, ".": 1012,
               "?": 1029}
_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789!\"#$%&'()*+,-/:;<=>@[\\]^_`{|}~"


def default_root() -> Path:
    """Where tiny checkpoints live unless told otherwise: `~/.cache/twig-forge/tiny`."""
    return Path(os.environ.get("TWIG_TINY_CACHE", Path.home() / ".cache" / "twig-forge" / "tiny"))


def tiny_checkpoint(kind: str, root: Path | None = None) -> Path:
    """The folder of the tiny `kind` checkpoint (one of KINDS) under `root` (default:
    `default_root()`, overridable by $TWIG_TINY_CACHE), built if missing."""
    if kind not in _BUILDERS:
        raise ValueError(f"unknown tiny checkpoint kind {kind!r}; expected one of {KINDS}")
    root = Path(root) if root is not None else default_root()
    target = root / f"{kind}-{VERSION}"
    if (target / "config.json").is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{kind}-", dir=root))
    try:
        with _quiet_and_seeded():
            _BUILDERS[kind](tmp)
        try:
            tmp.rename(target)
        except OSError:  # another process won the race: its folder is as good as ours
            if not (target / "config.json").is_file():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def resolve_checkpoint(model: str, kind: str) -> str:
    """What `from_pretrained` should load for a reward's `model` argument: "tiny" is the tiny
    `kind` checkpoint in the default cache, anything else (a Hub id or a folder) is itself."""
    return str(tiny_checkpoint(kind)) if model == "tiny" else model


def load_config(path: str, reward: str) -> PretrainedConfig:
    """The checkpoint's config, or a RewardError that names the reward and the checkpoint."""
    from transformers import AutoConfig

    from trainer.rewards.base import RewardError

    try:
        return AutoConfig.from_pretrained(path)
    except (OSError, ValueError) as e:
        raise RewardError(f"{reward}: cannot load the config of checkpoint {path!r}: {e}") from e


def bert_char_vocab(extra: tuple[str, ...] = ()) -> dict[str, int]:
    """A WordPiece vocabulary of single characters (and their `##` continuations) in BERT's id
    layout, so every lower-case ASCII text tokenizes without unknowns."""
    vocab = dict(_BERT_FIXED)
    free = (i for i in range(104, 10_000) if i not in vocab.values())
    for token in [*_CHARS, *(f"##{c}" for c in _CHARS + ".?"), *extra]:
        if token not in vocab:
            vocab[token] = next(free)
    top = max(vocab.values())
    used = set(vocab.values())
    vocab.update({f"[unused{i}]": i for i in range(top) if i not in used})
    return dict(sorted(vocab.items(), key=lambda kv: kv[1]))


def clip_char_vocab() -> dict[str, int]:
    """A byte-level BPE vocabulary without merges (every byte, alone and word-final)."""
    from tokenizers import pre_tokenizers

    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    tokens = ["<|startoftext|>", "<|endoftext|>", *alphabet, *(f"{c}</w>" for c in alphabet)]
    return {t: i for i, t in enumerate(tokens)}


@contextmanager
def _quiet_and_seeded() -> Iterator[None]:
    """Seed the random initialisation without touching the caller's RNG, and hide the progress
    bars of `save_pretrained` while building."""
    import torch
    from transformers.utils import logging

    bars = logging.is_progress_bar_enabled()
    logging.disable_progress_bar()
    try:
        with torch.random.fork_rng(devices=[]):
            yield
    finally:
        if bars:
            logging.enable_progress_bar()


def _seeded() -> None:
    import torch

    torch.manual_seed(SEED)


def _build_clip(out: Path) -> None:
    from transformers import CLIPConfig, CLIPModel, CLIPProcessor, CLIPTokenizer

    tokenizer = CLIPTokenizer(vocab=clip_char_vocab(), merges=[], model_max_length=77)
    ids = {"bos_token_id": tokenizer.bos_token_id, "eos_token_id": tokenizer.eos_token_id,
           "pad_token_id": tokenizer.pad_token_id}
    config = CLIPConfig(
        text_config=dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=37,
                         num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
                         **ids),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=2,
                           num_attention_heads=4, image_size=32, patch_size=8),
        projection_dim=16,
    )
    _seeded()
    CLIPModel(config).eval().save_pretrained(out)
    images = _small_clip_images()
    CLIPProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(out)


def _small_clip_images():
    """CLIP's PIL image processor at the tiny models' 32 px."""
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil
    return CLIPImageProcessorPil(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32})


def _build_blip(out: Path) -> None:
    from transformers import BertTokenizer, BlipConfig, BlipForQuestionAnswering, BlipProcessor
    from transformers.models.blip.image_processing_pil_blip import BlipImageProcessorPil

    vocab = bert_char_vocab(extra=("[DEC]", "yes", "no"))
    tokenizer = BertTokenizer(vocab=vocab, bos_token="[DEC]", model_max_length=64)
    config = BlipConfig(
        text_config=dict(vocab_size=len(vocab), hidden_size=32, encoder_hidden_size=32,
                         intermediate_size=37, num_hidden_layers=1, num_attention_heads=2,
                         max_position_embeddings=64, bos_token_id=vocab["[DEC]"],
                         pad_token_id=0, sep_token_id=102),
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=8,
                           initializer_range=0.02),
        projection_dim=16,
    )
    _seeded()
    BlipForQuestionAnswering(config).eval().save_pretrained(out)
    images = BlipImageProcessorPil(size={"height": 32, "width": 32})
    BlipProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(out)


def _build_gdino(out: Path) -> None:
    from transformers import (
        BertTokenizer,
        GroundingDinoConfig,
        GroundingDinoForObjectDetection,
        GroundingDinoProcessor,
    )
    from transformers.models.grounding_dino.image_processing_pil_grounding_dino import (
        GroundingDinoImageProcessorPil,
    )

    vocab = bert_char_vocab()
    tokenizer = BertTokenizer(vocab=vocab, model_max_length=32)
    config = GroundingDinoConfig(
        backbone_config=dict(model_type="swin", image_size=64, embed_dim=8, depths=[1, 1, 1, 1],
                             num_heads=[1, 1, 1, 1], window_size=2,
                             out_features=["stage2", "stage3", "stage4"]),
        text_config=dict(model_type="bert", vocab_size=len(vocab), hidden_size=32,
                         num_hidden_layers=1, num_attention_heads=2, intermediate_size=37),
        d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, num_queries=10,
        num_feature_levels=3, encoder_n_points=2, decoder_n_points=2, max_text_len=32,
        use_timm_backbone=False, use_pretrained_backbone=False,
    )
    _seeded()
    GroundingDinoForObjectDetection(config).eval().save_pretrained(out)
    images = GroundingDinoImageProcessorPil(size={"shortest_edge": 64, "longest_edge": 64})
    GroundingDinoProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(out)


def _build_git(out: Path) -> None:
    from transformers import BertTokenizer, GitConfig, GitForCausalLM, GitProcessor

    vocab = bert_char_vocab(extra=("yes", "no"))
    tokenizer = BertTokenizer(vocab=vocab, model_max_length=64)
    config = GitConfig(
        vision_config=dict(hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                           num_attention_heads=2, image_size=32, patch_size=8),
        vocab_size=len(vocab), hidden_size=32, num_hidden_layers=1, num_attention_heads=2,
        intermediate_size=37, max_position_embeddings=64, bos_token_id=101, eos_token_id=102,
        pad_token_id=0,
    )
    _seeded()
    GitForCausalLM(config).eval().save_pretrained(out)
    images = _small_clip_images()
    GitProcessor(image_processor=images, tokenizer=tokenizer).save_pretrained(out)


_BUILDERS: dict[str, Callable[[Path], None]] = {
    "clip": _build_clip, "blip": _build_blip, "gdino": _build_gdino, "git": _build_git,
}
