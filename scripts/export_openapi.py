"""Write the OpenAPI document the service serves at `/openapi.json` to docs/openapi.json.

    .venv/bin/python scripts/export_openapi.py            # (re)write docs/openapi.json
    .venv/bin/python scripts/export_openapi.py --check    # exit 1 when the file is stale

The document is built the way `metering-local serve` builds it for `/openapi.json`
(local/metering_local/gateway.py `openapi_document`): every function of template.yaml is
loaded as Lambda would load it and the Powertools resolvers' schemas are merged. Loading
the handlers talks to no AWS endpoint. tests/contract/test_openapi_export.py compares the
file with what a running `metering-local serve` answers.
"""

import argparse
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET = ROOT / "docs" / "openapi.json"


def build() -> dict:
    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    os.environ.setdefault("POWERTOOLS_TRACE_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_METRICS_DISABLED", "true")
    os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "WARNING")

    from metering_local import aws_endpoint
    from metering_local.gateway import openapi_document
    from metering_local.lambda_runtime import Runtime
    from metering_local.template import Template

    template = Template.load(ROOT / "template.yaml")
    names = aws_endpoint.Names(
        {logical: logical for logical in template.tables()},
        "metering-uploads",
        {logical: logical for logical in template.buses()},
    )
    for name, value in aws_endpoint.function_environment(template, names).items():
        os.environ.setdefault(name, value)
    runtime = Runtime(template.functions(), pool_size=1)
    try:
        return openapi_document(runtime)
    finally:
        close = getattr(runtime, "close", None)  # the runner's worker processes, if it has any
        if close is not None:
            close()


def render(document: dict) -> str:
    return json.dumps(document, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--check", action="store_true", help="compare instead of writing")
    parser.add_argument("--output", type=Path, default=TARGET)
    args = parser.parse_args(argv)
    text = render(build())
    if args.check:
        current = args.output.read_text() if args.output.exists() else ""
        if current != text:
            print(f"{args.output} is stale: run .venv/bin/python scripts/export_openapi.py", file=sys.stderr)
            return 1
        print(f"{args.output} is up to date")
        return 0
    args.output.write_text(text)
    print(f"wrote {args.output} ({len(json.loads(text)['paths'])} paths)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
