"""The chart's values: valid against values.schema.json, every key documented in place, no credentials.

Pure file checks (no helm): they run in the unit tier.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import jsonschema
import yaml

from tests.fixtures_helm import CHART_DIR, SCENARIOS, structural_to_jsonschema

SCHEMA = json.loads((CHART_DIR / "values.schema.json").read_text())


def test_values_schema_is_a_valid_json_schema() -> None:
    jsonschema.Draft7Validator.check_schema(SCHEMA)


def test_default_values_validate_against_the_schema() -> None:
    jsonschema.validate(yaml.safe_load((CHART_DIR / "values.yaml").read_text()), SCHEMA)


def test_schema_rejects_unknown_top_level_keys() -> None:
    validator = jsonschema.Draft7Validator(SCHEMA)
    assert list(
        validator.iter_errors({**yaml.safe_load((CHART_DIR / "values.yaml").read_text()), "modle": {}})
    )


def test_every_key_in_values_yaml_has_a_comment_above_or_belongs_to_a_documented_block() -> None:
    """Each mapping key line is preceded by a comment line, unless its parent key was documented
    (small nested blocks such as resources / tolerations / keda settings are documented at the parent)."""
    lines = (CHART_DIR / "values.yaml").read_text().splitlines()
    documented_indents: list[int] = []  # indents of documented ancestors still open
    undocumented = []
    for i, line in enumerate(lines):
        match = re.match(r"^(\s*)([A-Za-z0-9_.\-/\"]+):", line)
        if not match or line.lstrip().startswith("#"):
            continue
        indent = len(match.group(1))
        documented_indents = [d for d in documented_indents if d < indent]
        has_comment = i > 0 and lines[i - 1].lstrip().startswith("#")
        if has_comment:
            documented_indents.append(indent)
        elif not documented_indents:
            undocumented.append(line.strip())
    assert not undocumented, f"values.yaml keys without a comment: {undocumented}"


def test_no_values_file_holds_a_literal_credential() -> None:
    pattern = re.compile(
        r"^\s*(password|passwd|token|apiKey|api_key|dsn)\s*:\s*\S", re.IGNORECASE | re.MULTILINE
    )
    for path in [CHART_DIR / "values.yaml", *SCENARIOS.values()]:
        text = path.read_text()
        assert not pattern.search(text), f"{path.name} holds a literal credential"
        assert "://" not in re.sub(r"#.*", "", text) or "@" not in text, f"{path.name}: URL with credentials"


# Templates that render nothing with the default values (opt-in production options), so k8s/ has no file.
OPT_IN_TEMPLATES = {"ingress.yaml", "poddisruptionbudgets.yaml"}


def test_every_template_file_of_the_chart_is_covered_by_k8s() -> None:
    rendered = {p.name for p in (Path(CHART_DIR).parent.parent / "k8s").glob("*.yaml")}
    templates = {p.name for p in (CHART_DIR / "templates").glob("*.yaml")}
    assert templates - OPT_IN_TEMPLATES == rendered, "run scripts/render_k8s.py"


def test_crd_conversion_rejects_unknown_fields_and_accepts_int_or_string() -> None:
    crd_schema = {
        "type": "object",
        "properties": {
            "port": {"x-kubernetes-int-or-string": True, "anyOf": [{"type": "integer"}, {"type": "string"}]},
            "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {"a": {}}},
            "maybe": {"type": "string", "nullable": True},
            "rule": {
                "type": "object",
                "properties": {},
                "x-kubernetes-validations": [{"rule": "self.x > 0"}],
            },
        },
    }
    validator = jsonschema.Draft7Validator(structural_to_jsonschema(crd_schema))
    assert not list(validator.iter_errors({"port": 8080, "free": {"b": 1}, "maybe": None, "rule": {}}))
    assert not list(validator.iter_errors({"port": "http"}))
    assert list(validator.iter_errors({"prot": 1})), "unknown fields must be rejected"
    assert list(validator.iter_errors({"port": 1.5}))
