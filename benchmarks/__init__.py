"""Benchmarks: each script compares surge against a baseline measured in the same run (see README.md)."""

from surge_core.local_ray import ensure_auth_token

# Ray reads its auth settings when it is imported, and some benchmark modules import Ray at the top: the
# checkout's token (.run/ray-auth-token, never ~/.ray) must be in the environment before that.
ensure_auth_token()
