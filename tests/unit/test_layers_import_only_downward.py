"""The import rule of ARCHITECTURE.md, enforced: packages and serving's layers import only downward.

Every module of `surge_core`, `deployments` and `pipelines` is parsed (no import is executed), and each of its
imports of a project module, at module level or inside a function, is checked against the layer table.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[2]

# Packages: which project packages each may import (besides itself).
PACKAGE_MAY_IMPORT = {
    "surge_core": set(),
    "deployments": {"surge_core"},
    "pipelines": {"surge_core"},
}

# Serving's layers, top to bottom: a module may import its own layer and the layers below it.
SERVING_LAYERS: list[tuple[str, set[str]]] = [
    ("app", {"deployments.app"}),
    (
        "edge",
        {
            "deployments.gateway",
            "deployments.openai_render",
            "deployments.http_guards",
            "deployments.gateway_metrics",
            "deployments.gateway_metering",
            "deployments.api_keys",
            "deployments.request_tracing",
        },
    ),
    (
        "flows",
        {
            "deployments.flows",
            "deployments.rag",
            "deployments.inference_logging",
            "deployments.usage_recording",
            "deployments.model_events",
            "deployments.rollback_guard",
        },
    ),
    (
        "routing and stage clients",
        {
            "deployments.model_router",
            "deployments.stage_client",
            "deployments.query_embedding",
            "deployments.query_retrieval",
            "deployments.request_timeline",
            "deployments.prefix_affinity",
            "deployments.prefix_affinity_router",
        },
    ),
    (
        "stages",
        {
            "deployments.embedder",
            "deployments.retriever",
            "deployments.llm",
            "deployments.engines",
            "deployments.embedding_versions",
        },
    ),
    (
        "serving contracts",
        {
            "deployments.settings",
            "deployments.autoscaling",
            "deployments.openai_api",
            "deployments.observability",
            "deployments.principal",
            "deployments.rate_limits",
            "deployments.model_registry",
            "deployments.routing_weights",
            "deployments.rollback_policy",
            "deployments.guardrails",
            "deployments.stage_tracing",
            "deployments.cost_metrics",
        },
    ),
]


def _serving_layer(module: str) -> int | None:
    for rank, (_, prefixes) in enumerate(SERVING_LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes):
            return rank
    return None


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO_ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text(), filename=str(path))
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            found.extend((node.lineno, f"{node.module}.{alias.name}") for alias in node.names)
            found.append((node.lineno, node.module))
    return found


def _violations() -> list[str]:
    problems: list[str] = []
    for package, allowed in PACKAGE_MAY_IMPORT.items():
        for path in sorted((REPO_ROOT / package).rglob("*.py")):
            module = _module_name(path)
            for line, imported in _imports(path):
                top = imported.split(".")[0]
                where = f"{path.relative_to(REPO_ROOT)}:{line} imports {imported}"
                if top in PACKAGE_MAY_IMPORT and top != package and top not in allowed:
                    problems.append(
                        f"{where}: {package} may import only {sorted(allowed) or 'nothing of the project'}"
                    )
                if package == "deployments" and top == "deployments":
                    mine, theirs = _serving_layer(module), _serving_layer(imported)
                    if mine is not None and theirs is not None and theirs < mine:
                        problems.append(
                            f"{where}: layer '{SERVING_LAYERS[mine][0]}' imports the higher layer "
                            f"'{SERVING_LAYERS[theirs][0]}'"
                        )
    return sorted(set(problems))


def test_every_module_imports_only_downward() -> None:
    assert _violations() == []


def test_every_serving_module_has_a_layer() -> None:
    unplaced = [
        _module_name(p)
        for p in sorted((REPO_ROOT / "deployments").rglob("*.py"))
        if _module_name(p) != "deployments" and _serving_layer(_module_name(p)) is None
    ]
    assert unplaced == [], "add these modules to SERVING_LAYERS (and to ARCHITECTURE.md)"


@pytest.mark.parametrize(
    ("source", "line", "package"),
    [
        ("from pipelines.consumer import ConsumerLoop\n", 1, "deployments/flows/chat.py"),
        ("def f():\n    from deployments.gateway import api\n", 2, "pipelines/ingestion.py"),
        ("import deployments.settings\n", 1, "surge_core/records.py"),
        ("from deployments.flows import ChatFlow\n", 1, "deployments/stage_client.py"),
    ],
)
def test_the_rule_catches_a_forbidden_import(
    source: str, line: int, package: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The checker itself: a planted upward import (module level or inside a function) is reported."""
    planted = REPO_ROOT / package
    monkeypatch.setattr(
        Path, "read_text", lambda self, *a, **k: source if self == planted else original_read(self)
    )
    assert any(f"{package}:{line} imports" in problem for problem in _violations())


original_read = Path.read_text
