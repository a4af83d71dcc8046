"""`sft merge`: the command line of the models stage."""

import argparse


def make_merge_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sft merge",
        description="Merge a LoRA adapter into its base model (named in adapter_config.json) and save the "
        "result as a standalone safetensors model with its tokenizer and prompt template.",
    )
    parser.add_argument("adapter_dir", metavar="ADAPTER_DIR", help="directory holding adapter_config.json")
    parser.add_argument("--output", required=True, metavar="DIR", help="directory for the merged model")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="write into a non-empty DIR, replacing only the merged model's files (anything else stays)",
    )
    return parser


def merge_command(argv: list[str]) -> int:
    from sft.models.merge import merge_adapter

    args = make_merge_parser().parse_args(argv)
    output = merge_adapter(args.adapter_dir, args.output, overwrite=args.overwrite)
    print(f"merged {args.adapter_dir} into {output}")
    return 0
