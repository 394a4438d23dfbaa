"""Ray on one machine with no state outside the checkout: the auth token lives in the run directory.

Ray 2.60 turns token authentication on. `ray.init()` of a fresh local cluster writes `~/.ray/auth_token` when
none exists, but `ray start --head` refuses to start without one ("Token authentication is enabled but no
authentication token was found"). A machine where the tests ran once therefore hides the bug that a new user's
`make run` hits. Every local entry point (`make run`, the tests, the benchmarks, the CLIs they start) calls
:func:`ensure_auth_token` instead, which creates one token per checkout under `.run/` (mode 0600) and hands it
to Ray through `RAY_AUTH_TOKEN_PATH`, a variable Ray reads before `~/.ray/auth_token` and that child processes
inherit. A token the user set on purpose (`RAY_AUTH_TOKEN` or `RAY_AUTH_TOKEN_PATH`) is kept.

    python -m surge_core.local_ray token [--run-dir DIR]     # prints the token file's path
"""

from __future__ import annotations

import argparse
import os
import secrets
import sys
from collections.abc import Sequence
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
TOKEN_FILE = "ray-auth-token"


def default_run_dir() -> Path:
    """Where the local stack keeps its state: `$SURGE_RUN_DIR`, else `.run/` in the checkout."""
    return Path(os.environ.get("SURGE_RUN_DIR") or REPO_ROOT / ".run")


def ensure_auth_token(run_dir: Path | None = None) -> Path | None:
    """Make sure Ray finds a token without looking in HOME; returns the token file (None: user-provided).

    Sets `RAY_AUTH_MODE=token` and `RAY_AUTH_TOKEN_PATH` in this process's environment, so every Ray driver
    and subprocess started after this call uses the same token. Call it before `import ray`: Ray reads these
    when it is imported (set afterwards, `ray.init()` starts a cluster that refuses its own driver).
    """
    os.environ.setdefault("RAY_AUTH_MODE", "token")
    if os.environ.get("RAY_AUTH_TOKEN"):
        return None
    preset = os.environ.get("RAY_AUTH_TOKEN_PATH")
    path = Path(preset) if preset else (run_dir or default_run_dir()) / TOKEN_FILE
    if not path.is_file() or not path.read_text().strip():
        path.parent.mkdir(parents=True, exist_ok=True)
        # O_EXCL: two processes racing to create it end up with one token, not two different ones.
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            pass
        else:
            with os.fdopen(fd, "w") as handle:
                handle.write(secrets.token_hex(32))
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)
    return path


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m surge_core.local_ray")
    commands = parser.add_subparsers(dest="command", required=True)
    token = commands.add_parser(
        "token", help="Create the checkout's Ray auth token if missing; print its path."
    )
    token.add_argument("--run-dir", type=Path, help="Run directory (default: $SURGE_RUN_DIR or .run/).")
    args = parser.parse_args(argv)
    path = ensure_auth_token(args.run_dir)
    print(path if path is not None else "")
    return 0


if __name__ == "__main__":
    sys.exit(main())
