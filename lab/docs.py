"""`sluice docs pipeline`: write or check docs/pipeline.md, generated from the flow declarations."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from flows.docgen import render_pipeline_doc


def pipeline_main(argv: list[str]) -> int:
    """Print the pipeline document, write it (`--write PATH`) or check it (`--check PATH`)."""
    parser = argparse.ArgumentParser(prog="sluice docs pipeline")
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--write", metavar="PATH", help="write the document to PATH")
    group.add_argument("--check", metavar="PATH", help="exit 1 if PATH is not up to date")
    args = parser.parse_args(argv)
    text = render_pipeline_doc()
    if args.write:
        Path(args.write).write_text(text)
        print(f"wrote {args.write}")
        return 0
    if args.check:
        path = Path(args.check)
        if not path.exists() or path.read_text() != text:
            print(f"{path} is stale: run `make docs`", file=sys.stderr)
            return 1
        print(f"{path} is up to date")
        return 0
    sys.stdout.write(text)
    return 0
