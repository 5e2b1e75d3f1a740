"""docs/openapi.json is what the service serves at /openapi.json."""

import json
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parents[2]
EXPORTED = ROOT / "docs" / "openapi.json"
FIX = "docs/openapi.json is stale: run .venv/bin/python scripts/export_openapi.py"


def test_the_exported_document_matches_the_running_service(runner):
    response = requests.get(f"{runner.api_url}/openapi.json", timeout=30)
    assert response.status_code == 200
    served = response.json()
    exported = json.loads(EXPORTED.read_text())
    assert sorted(served["paths"]) == sorted(exported["paths"]), FIX
    for path, operations in served["paths"].items():
        assert sorted(operations) == sorted(exported["paths"][path]), f"{path}: {FIX}"
    assert served == exported, FIX
