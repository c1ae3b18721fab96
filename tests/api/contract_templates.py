"""The contract test's calls of the template routes (tests/api/test_openapi_contract.py): an egg imported
as published and a template in lightd's own form, listed, shown and deleted."""

from __future__ import annotations

from typing import Any

from tests.templates.eggs import paper_egg

ONE = "/templates/{template_id}"


async def templates_contract(c: Any) -> None:
    egg = await c.call("POST", "/templates", 201, params={"id": "contract-egg"}, json_body=paper_egg())
    own = await c.call("GET", ONE, 200, template_id=egg["id"])
    again = await c.call("POST", "/templates", 201, json_body={**own, "id": "contract-own"})  # lightd's own form
    listed = await c.call("GET", "/templates", 200)
    assert {"contract-egg", "contract-own"} <= {t["id"] for t in listed["templates"]}
    for template_id in (egg["id"], again["id"]):
        await c.call("DELETE", ONE, 200, template_id=template_id)
