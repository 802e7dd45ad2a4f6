"""The JSON Schemas editors use are current, and accept exactly what the agent accepts."""

import json
import subprocess
import sys
import tomllib
from pathlib import Path

import jsonschema
import yaml
from vaxelbox.hw.board import Board
from vaxelbox.site import Site, demo_site_text

REPO = Path(__file__).resolve().parents[2]
SITE_SCHEMA = REPO / "firmware/vaxelbox/site/site.schema.json"
BOARD_SCHEMA = REPO / "boards/board.schema.json"


def test_committed_schemas_are_current():
    assert json.loads(SITE_SCHEMA.read_text()) == Site.model_json_schema(), "run: make schemas"
    assert json.loads(BOARD_SCHEMA.read_text()) == Board.model_json_schema(), "run: make schemas"


def test_schema_command_prints_the_site_schema():
    printed = subprocess.run(
        [sys.executable, "-m", "vaxelbox", "schema", "site"], capture_output=True, text=True, check=True
    ).stdout
    assert json.loads(printed) == Site.model_json_schema()


def toml_as_json(text: str) -> object:
    """TOML as a TOML-aware editor hands it to a JSON Schema: dates become ISO strings."""
    return json.loads(json.dumps(tomllib.loads(text), default=lambda d: d.isoformat()))


def test_demo_site_validates_against_its_schema():
    jsonschema.validate(toml_as_json(demo_site_text()), json.loads(SITE_SCHEMA.read_text()))


def test_schema_rejects_an_unknown_field_like_the_agent():
    data = toml_as_json(demo_site_text())
    data["users"][0]["extention"] = "999"
    validator = jsonschema.Draft202012Validator(json.loads(SITE_SCHEMA.read_text()))
    assert any("extention" in e.message for e in validator.iter_errors(data))


def test_board_files_validate_against_their_schema():
    schema = json.loads(BOARD_SCHEMA.read_text())
    for path in sorted((REPO / "boards").glob("*.yaml")):
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)
