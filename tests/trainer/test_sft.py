"""TwiG SFT on a tiny random Janus (CPU): task instances, the loss falling, exact resume, export."""

from __future__ import annotations

import json

import pytest
import torch

from generator.sequence import TwigFormat
from trainer.config import SFTConfig
from trainer.data import DataError, load_examples
from trainer.instances import epoch_order, parse_mixture
from trainer.runlog import read_log
from trainer.sft import SFTRun

torch.set_num_threads(1)


def cfg(data, out, **kw) -> SFTConfig:
    base = dict(data=str(data), out=str(out), steps=4, lr=1e-3, batch_size=4, save_every=2, val_every=0,
                progress=False, limit=6)
    return SFTConfig(**(base | kw))


def test_instances_are_the_nine_tasks_in_the_generator_format(twig_data, tmp_path):
    """Each trajectory gives think/reflect/generate per band; each instance is the generator's own
    interleaved stream cut after its target, with the loss on that target only."""
    run = SFTRun(cfg(twig_data, tmp_path, limit=3))
    by_key: dict[str, list] = {}
    for inst in run.train:
        by_key.setdefault(inst.key, []).append(inst)
    example = load_examples(twig_data, "train", 3)[0]
    insts = by_key[example.key]
    rejected = sum(1 for r in example.record.regions if r.reflection and not r.reflection.accepted)
    assert len(insts) == 9 - rejected
    fmt: TwigFormat = run.builder.format_for(example.record)
    longest = max(insts, key=len)
    for inst in insts:
        assert inst.ids == longest.ids[: len(inst)]          # all cut from one stream
        targets = [t for t, m in zip(inst.ids, inst.target, strict=True) if m]
        if inst.task == "think":
            assert targets == fmt.guide_ids(example.record.regions[inst.band].guide)
            assert not any(i and t for i, t in zip(inst.is_img, inst.target, strict=True))
        elif inst.task == "generate":
            assert len(targets) == fmt.grid.size(inst.band) and all(
                i for i, t in zip(inst.is_img, inst.target, strict=True) if t)
        else:
            assert fmt.decode(targets).startswith("score")


def test_mixture_gives_each_family_its_share(twig_data, tmp_path):
    run = SFTRun(cfg(twig_data, tmp_path, limit=6))
    order = epoch_order(run.train, parse_mixture("think=2,reflect=1,generate=1"), 0, 0) * 20
    picks = [run.train[i].task for i in order]
    share = picks.count("think") / len(picks)
    assert 0.42 < share < 0.58
    with pytest.raises(ValueError, match="unknown task family"):
        parse_mixture("draw=1")


def test_loss_on_a_fixed_batch_falls_by_half(twig_data, tmp_path):
    run = SFTRun(cfg(twig_data, tmp_path, lr=3e-3))
    batch = run.micro_batch(0, 0)
    losses = [run.learn([batch])["loss"] for _ in range(30)]
    assert losses[-1] < 0.5 * losses[0], losses


def test_resume_gives_the_same_next_step_loss(twig_data, tmp_path):
    """Stopping after step 2 and resuming (fresh objects, state from the checkpoint only) gives the
    losses of an uninterrupted run, exactly."""
    SFTRun(cfg(twig_data, tmp_path / "straight")).run()
    SFTRun(cfg(twig_data, tmp_path / "stopped", steps=2)).run()
    SFTRun(cfg(twig_data, tmp_path / "stopped")).run()
    straight = [e["loss"] for e in read_log(tmp_path / "straight") if e["kind"] == "train"]
    resumed = [e["loss"] for e in read_log(tmp_path / "stopped") if e["kind"] == "train"]
    assert len(straight) == len(resumed) == 4
    assert resumed == straight


def test_a_resume_with_other_settings_is_refused(twig_data, tmp_path):
    SFTRun(cfg(twig_data, tmp_path, steps=2)).run()
    with pytest.raises(ValueError, match="other settings"):
        SFTRun(cfg(twig_data, tmp_path, lr=5e-4)).run()


def test_lora_run_exports_a_checkpoint_generate_loads(twig_data, tmp_path):
    from generator.model import load_model
    from generator.sampler import Request, TwigSampler, TwigSettings

    final = SFTRun(cfg(twig_data, tmp_path, steps=2, lora_rank=4, val_every=1)).run()
    log = read_log(tmp_path)
    assert [e["kind"] for e in log].count("val") == 2
    assert log[0]["trainable"] < log[0]["total"] / 5          # only the adapters learn
    meta = json.loads((final / "twig_train.json").read_text())
    assert meta["kind"] == "sft" and meta["step"] == 2
    lm = load_model(str(final), "cpu")
    out = TwigSampler(lm.model, lm.tokenizer, TwigSettings(guide_tokens=4, reflect_tokens=4)).generate(
        [Request("a red circle", 0)])
    assert len(out[0].image_tokens) == 576


def test_missing_split_and_bad_data_are_clear_errors(twig_data, tmp_path):
    with pytest.raises(DataError, match="no dataset"):
        load_examples(tmp_path / "nowhere", "train")
    with pytest.raises(DataError, match="unknown split"):
        load_examples(twig_data, "test")


def test_hub_style_loading_reads_the_same_records(twig_data):
    """A folder without manifest.json goes through `datasets.load_dataset` (as a Hub repo does)."""
    import shutil

    direct = load_examples(twig_data, "val")
    copy = twig_data.parent / "as-hub"
    shutil.copytree(twig_data, copy, ignore=shutil.ignore_patterns("manifest.json", "tokens"))
    via_datasets = load_examples(copy, "val")
    assert [e.record for e in via_datasets] == [e.record for e in direct]
