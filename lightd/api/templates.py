"""/templates: the node's server templates (shipped `install-scripts/`, `templates.dirs`, and those added here:
a Pterodactyl/Pelican egg as published, or lightd's own form)."""

from __future__ import annotations

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field

from lightd import keys
from lightd.api.query import read_query
from lightd.api.route_docs import View, documented
from lightd.http import json_response, read_json
from lightd.errors import ValidationFailed
from lightd.templates.models import Template

routes = web.RouteTableDef()
PATH = "/templates/{template_id}"


class TemplateAddQuery(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    id: str | None = Field(default=None, min_length=1, max_length=63)
    """The new template's id (default: the body's `id`, or an egg's name made into one, e.g. "paper")."""


class TemplateSummary(View):
    id: str
    name: str
    description: str
    source: str
    """shipped (install-scripts/), directory (templates.dirs) or api."""
    images: dict[str, str]
    variables: list[str]
    """The env names of its variables."""


class TemplateList(View):
    templates: list[TemplateSummary]
    count: int


class TemplateDeleted(View):
    message: str
    id: str


@routes.get("/templates")
@documented(response=TemplateList)
async def list_templates(request: web.Request) -> web.Response:
    templates = request.config_dict[keys.TEMPLATES].list()
    return json_response({"templates": templates, "count": len(templates)})


@routes.post("/templates")
@documented(query=TemplateAddQuery, status=201, response=Template, description=(
    "The body is a Pterodactyl or Pelican egg exactly as exported (`meta.version` PTDL_v1, PTDL_v2 or PLCN_v1), "
    "or a template in lightd's form (the shape GET /templates/{id} shows). A field that cannot be read is a 400 "
    "naming it; rules lightd does not know are listed in `warnings`. 409 when the id is taken."))
async def add_template(request: web.Request) -> web.Response:
    """Import an egg, or add a template in lightd's own form."""
    query = read_query(request, TemplateAddQuery)
    body = await read_json(request)
    if not isinstance(body, dict):
        raise ValidationFailed("request body must be a JSON object")
    template = await request.config_dict[keys.TEMPLATES].add(body, query.id)
    return json_response(template.model_dump(mode="json"), status=201)


@routes.get(PATH)
@documented(response=Template)
async def get_template(request: web.Request) -> web.Response:
    template = request.config_dict[keys.TEMPLATES].get(request.match_info["template_id"])
    return json_response(template.model_dump(mode="json"))


@routes.delete(PATH)
@documented(response=TemplateDeleted)
async def delete_template(request: web.Request) -> web.Response:
    """Delete a template added over the API (409 for a shipped or directory one); its servers keep running."""
    template_id = request.match_info["template_id"]
    await request.config_dict[keys.TEMPLATES].delete(template_id)
    return json_response({"message": f"template {template_id} deleted", "id": template_id})
