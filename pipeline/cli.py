"""`twig`: the command line (dataset, validate, tasks, show, upload, schema, generate, train, eval,
tokenize)."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from pipeline.config import STAGES, ConfigError, load_config

log = logging.getLogger("twig")


def _dataset(args: argparse.Namespace) -> int:
    from pipeline.driver import build

    path = args.config
    if path is None and args.recipe:
        path = Path(__file__).resolve().parent.parent / "configs" / f"{args.recipe}.yaml"
    config = load_config(path, args.set, limit=args.limit, until=args.until, teacher__model=args.model,
                         run__out=args.out, run__engine=args.engine, run__workers=args.workers)
    if args.no_progress:
        config.run.progress = False
    build(config)
    return 0


def _validate(args: argparse.Namespace) -> int:
    from sharding.validate import validate_dataset

    report = validate_dataset(Path(args.dir), check_images=not args.fast)
    print(report.summary())
    return 0 if report.ok else 1


def _tasks(args: argparse.Namespace) -> int:
    from sharding.stats import read_records
    from sharding.tasks import count_tasks, iter_instances

    root = Path(args.dir)
    try:
        manifest = json.loads((root / "manifest.json").read_text())
        shards = [s["path"] for s in manifest["shards"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"{root} has no readable manifest.json ({type(e).__name__}: {e})") from None
    records = read_records(root, shards)
    counts = count_tasks(records)
    for name, n in counts.items():
        print(f"{name:12s} {n}")
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            for inst in iter_instances(records):
                f.write(json.dumps(inst, ensure_ascii=False) + "\n")
        print(f"wrote {counts.get('total', 0)} task instances to {args.out}")
    return 0


def _upload(args: argparse.Namespace) -> int:
    from sharding.upload import UploadError, human_bytes, upload_dataset

    try:
        report = upload_dataset(Path(args.dir), args.repo, private=args.private, revision=args.revision,
                                dry_run=args.dry_run, transport=args.transport)
    except UploadError as e:
        raise ConfigError(str(e)) from None
    if args.dry_run:
        for f in report.files:
            print(f"{human_bytes(f.bytes):>10}  {f.path}")
        print(f"would upload {len(report.files)} files, {human_bytes(report.total_bytes)}, to "
              f"{report.url} (dry run: nothing was sent)")
        return 0
    print(f"uploaded {len(report.sent)} files ({human_bytes(report.sent_bytes)}) in {report.commits} "
          f"commit(s) via {report.transport}; {len(report.skipped)} already there"
          + (f"; removed {len(report.deleted)} file(s) of an older build" if report.deleted else "")
          + f"; {report.url}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from sharding.viewer import ReportError, write_report

    out = Path(args.out) if args.out else Path(args.dir) / "report.html"
    try:
        s = write_report(Path(args.dir), out, limit=None if args.limit < 0 else args.limit)
    except ReportError as e:
        raise ConfigError(str(e)) from None
    print(f"wrote {s.out}: {s.kept_shown} of {s.kept_total} trajectories, {s.rejects_shown} of "
          f"{s.rejects_total} rejects (open it in a browser; it needs no network)")
    return 0


def _schema(args: argparse.Namespace) -> int:
    from schemas import json_schema

    text = json.dumps(json_schema(), indent=2, sort_keys=True) + "\n"
    if args.out:
        Path(args.out).write_text(text)
    else:
        sys.stdout.write(text)
    return 0


def _generate(args: argparse.Namespace) -> int:
    from generator.cli import run
    from generator.model import ModelError
    from generator.prompts import PromptsError
    from generator.sequence import FormatError

    try:
        return run(args)
    except (ModelError, PromptsError, FormatError, ValueError) as e:
        raise ConfigError(str(e)) from None


def _trainer(fn_name: str):
    """Run a trainer command; bad settings, data or models are one clear line and exit 2."""

    def call(args: argparse.Namespace) -> int:
        from generator.model import ModelError
        from generator.prompts import PromptsError
        from generator.sequence import FormatError
        from trainer import cli
        from trainer.data import DataError
        from trainer.evaluate import EvalError
        from trainer.rewards import RewardError

        fn = {"train": cli.run_train, "tokenize": cli.run_tokenize}.get(fn_name)
        if fn is None:
            from trainer.evaluate import run as fn
        try:
            return fn(args)
        except (ModelError, PromptsError, FormatError, DataError, EvalError, RewardError, ValueError) as e:
            raise ConfigError(str(e)) from None

    return call


MODEL_COMMANDS = {
    "generate": "draw images with a Janus model, thinking between bands",
    "train": "train a TwiG model on a dataset: sft, then grpo",
    "eval": "draw T2I-CompBench val prompts and score them by category",
    "tokenize": "cache a dataset's images as VQ tokens for training",
}


def _add_model_command(name: str, sp: argparse.ArgumentParser) -> None:
    if name == "generate":
        from generator.cli import add_arguments

        add_arguments(sp)
        sp.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS,
                        help="debug logging")
        sp.set_defaults(fn=_generate)
    elif name == "eval":
        from trainer.evaluate import add_arguments as add_eval_arguments

        add_eval_arguments(sp)
        sp.set_defaults(fn=_trainer("eval"))
    else:
        from trainer.cli import add_tokenize_arguments, add_train_arguments

        (add_train_arguments if name == "train" else add_tokenize_arguments)(sp)
        sp.set_defaults(fn=_trainer(name))


def _command(argv: list[str]) -> str | None:
    """The subcommand named on the command line (the first word that is not an option)."""
    return next((a for a in argv if not a.startswith("-")), None)


def parser(command: str | None = None) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="twig", description="Build, check and use TwiG datasets.")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True)

    d = sub.add_parser("dataset", help="build a dataset (resumes where a previous run stopped)")
    d.add_argument("--config", "-c", help="YAML or TOML config file")
    d.add_argument("--out", "-o", help="output folder (default from config: data/twig-synthetic)")
    d.add_argument("--limit", type=int, help="build only the first N inputs")
    d.add_argument("--until", choices=STAGES, help="stop after this stage and shard what there is")
    d.add_argument("--recipe", choices=["scene", "prompt-first", "image-first"],
                   help="shorthand for the bundled configs/<recipe>.yaml when --config is not given")
    d.add_argument("--model", help="the teacher's chat model (sets teacher.model)")
    d.add_argument("--engine", choices=["local", "beam", "ray"],
                   help="local (default): processes here; ray: a local Ray instance or the cluster "
                   "in run.ray.address / RAY_ADDRESS; beam: Beam's FnApiRunner here, or run.beam.runner")
    d.add_argument("--workers", type=int, help="worker processes (default: all cores)")
    d.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config value, e.g. --set segment.mode=adaptive")
    d.add_argument("--no-progress", action="store_true", help="no progress bar")
    d.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging")
    d.set_defaults(fn=_dataset)

    v = sub.add_parser("validate", help="check a dataset folder against its manifest and the schema")
    v.add_argument("dir")
    v.add_argument("--fast", action="store_true", help="skip decoding images")
    v.set_defaults(fn=_validate)

    t = sub.add_parser("tasks", help="expand trajectories into SFT task instances")
    t.add_argument("dir")
    t.add_argument("--out", help="write the instances as JSON lines to this file")
    t.set_defaults(fn=_tasks)

    from sharding.viewer import DEFAULT_LIMIT

    sh = sub.add_parser("show", help="write a self-contained HTML page of a dataset's trajectories")
    sh.add_argument("dir")
    sh.add_argument("--out", help="the page to write (default DIR/report.html)")
    sh.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                    help=f"at most N trajectories and N rejects (default {DEFAULT_LIMIT}; -1: all)")
    sh.set_defaults(fn=_show)

    u = sub.add_parser("upload", help="publish a dataset folder to a Hugging Face Hub dataset repo "
                       "(resumes an interrupted upload)")
    u.add_argument("dir")
    u.add_argument("--repo", required=True, metavar="OWNER/NAME", help="the dataset repo (created if missing)")
    u.add_argument("--private", action="store_true", help="create the repo private")
    u.add_argument("--revision", help="branch to commit to (created if missing; default main)")
    u.add_argument("--dry-run", action="store_true", help="list what would be uploaded and its size")
    u.add_argument("--transport", choices=["auto", "xet", "lfs"], default="auto",
                   help="auto (default): Xet storage where the endpoint offers it, else Git LFS")
    u.set_defaults(fn=_upload)

    # The model commands' options live with torch-importing modules: they are added only when
    # that command is the one being run, so the data commands start in a fraction of a second.
    for name, help_ in MODEL_COMMANDS.items():
        sp = sub.add_parser(name, help=help_)
        if name == command:
            _add_model_command(name, sp)

    s = sub.add_parser("schema", help="print the twig/v1 JSON Schema")
    s.add_argument("--out")
    s.set_defaults(fn=_schema)
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser(_command(argv)).parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="twig: %(message)s", stream=sys.stderr)
    try:
        return args.fn(args)
    except ConfigError as e:
        print(f"twig: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("twig: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except OSError as e:
        print(f"twig: error: {e.strerror or e}: {e.filename or ''}".rstrip(": "), file=sys.stderr)
        return 1
    except Exception as e:
        if not getattr(e, "fatal", False):
            raise
        print(f"twig: error: {e}; finished work is kept, run again to resume", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
