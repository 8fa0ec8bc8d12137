"""lastvit-publish: validate a LastViT checkpoint or adapter folder, then upload it to the Hugging Face Hub.

First (in seconds) the Hub account: a token (`hf auth login`, HF_TOKEN or --token) and the Hub
reachable. Then the folder: its files, the model card's metadata, and a load and forward pass in a
fresh Python process where this package is NOT importable (only `trust_remote_code=True` remote
code; an adapter loads on its base with its own labels). Only a folder that passes is uploaded;
resume checkpoints (`checkpoints/`), `best/` and hidden staging folders stay local.

    lastvit-publish runs/tiny --repo-id you/lastvit-tiny-scenes [--private] [--dry-run]
"""

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path

from lastvit.arguments import add_arguments, option


@dataclass(kw_only=True)
class PublishArguments:
    folder: Path = option(help="checkpoint or adapter folder (e.g. a lastvit-train --output-dir)", flag="folder")
    repo_id: str | None = option(None, "Hub repository, e.g. you/lastvit-tiny (not needed with --dry-run)")
    private: bool = option(False, "create the repository as private")
    token: str | None = option(None, "Hugging Face token (default: HF_TOKEN or the one `hf auth login` saved)")
    dry_run: bool = option(False, "validate only, offline; upload nothing")


OPTIONS = (PublishArguments,)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lastvit-publish", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_arguments(parser, PublishArguments)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.dry_run and not args.repo_id:
        parser.error("--repo-id is required unless --dry-run")
    from lastvit.files import ModelPathError
    from lastvit.hub import PublishError, publish, validate_folder

    try:
        if args.dry_run:
            print(json.dumps(validate_folder(args.folder)))
            print(f"{args.folder} is ready to publish")
            return 0
        print(publish(args.folder, args.repo_id, private=args.private, token=args.token))
    except (PublishError, ModelPathError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
