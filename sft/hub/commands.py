"""`sft push` and `sft download`: the command line of the sharing stage."""

import argparse

from sft.models.load import OFFLINE_DEFAULT
from sft.paths import HUB_STAGING_DIR


def make_push_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sft push",
        description="Upload a trained model or LoRA adapter to the Hugging Face Hub with a generated model card. "
        "The token comes from HF_TOKEN or `hf auth login`.",
    )
    parser.add_argument("model_dir", metavar="DIR", help="training output directory (model or adapter)")
    parser.add_argument("--repo-id", required=True, help="target repository, e.g. your-name/smollm2-alpaca")
    parser.add_argument("--private", action="store_true", help="make the repository private")
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help=f"write the folder that would be uploaded (DIR/{HUB_STAGING_DIR}) and upload nothing",
    )
    parser.add_argument("--commit-message", default=None, help="commit message on the Hub")
    return parser


def push_command(argv: list[str]) -> int:
    from sft.hub.push import push_to_hub

    args = make_push_parser().parse_args(argv)
    push_to_hub(
        args.model_dir, args.repo_id, private=args.private, dry_run=args.dry_run, commit_message=args.commit_message
    )
    return 0


def make_download_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sft download",
        description="Download a model or adapter from the Hugging Face Hub (safetensors weights, config, "
        f"tokenizer) into a directory that every sft command accepts. `{OFFLINE_DEFAULT}` and the "
        "sft-tiny-* test models are written from local files.",
    )
    parser.add_argument("model", metavar="MODEL", help="Hub id, e.g. HuggingFaceTB/SmolLM2-135M-Instruct")
    parser.add_argument("--output", required=True, metavar="DIR", help="directory to write the model to")
    parser.add_argument("--revision", default=None, help="branch, tag or commit (default: main)")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty DIR, replacing only the files of this download (anything else stays)",
    )
    return parser


def download_command(argv: list[str]) -> int:
    from sft.hub.download import download

    args = make_download_parser().parse_args(argv)
    output, files = download(args.model, args.output, revision=args.revision, overwrite=args.overwrite)
    print(f"downloaded {args.model} to {output}: {', '.join(files)}")
    return 0
