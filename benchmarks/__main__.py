"""``python -m benchmarks``: list the side-by-side benchmark scripts and how to run them."""

from __future__ import annotations

from pathlib import Path


def main() -> None:
    scripts = sorted(p for p in Path(__file__).parent.glob("*.py") if not p.name.startswith("_"))
    if not scripts:
        print("No benchmark scripts yet; see benchmarks/README.md for the method.")
        return
    print("Benchmark scripts (run each with --help for its options):")
    for script in scripts:
        doc = (script.read_text().split('"""')[1].strip().splitlines() or [""])[0]
        print(f"  python benchmarks/{script.name:28} {doc}")


if __name__ == "__main__":
    main()
