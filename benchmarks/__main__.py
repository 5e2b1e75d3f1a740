"""Run every bench section and print one table: `python -m benchmarks [--only SECTION ...]`."""

import argparse
import importlib
import subprocess
import time

SECTIONS = [
    "cold_start",
    "handler_cpu",
    "storage_costs",
    "cost",
    "bulk_upload",
    "end_to_end",
    "billing_close",
]


def table(rows: list[list[str]]) -> str:
    header = ["section", "measure", "figure", "unit", "target", "met"]
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    lines = ["| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |"]
    lines.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    lines += ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks")
    parser.add_argument("--only", nargs="*", choices=SECTIONS, default=SECTIONS)
    args = parser.parse_args()
    rows = []
    for name in args.only:
        started = time.perf_counter()
        figures = importlib.import_module(f"benchmarks.{name}").run()
        rows += [f.row() for f in figures]
        print(f"# {name}: {time.perf_counter() - started:.0f} s", flush=True)
    commit = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True
    ).stdout.strip()
    print(f"\nRun {time.strftime('%Y-%m-%d')} at commit {commit or '?'}\n")
    print(table(rows))


if __name__ == "__main__":
    main()
