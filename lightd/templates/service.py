"""TemplateService: every template this node knows — shipped (`install-scripts/`), from `templates.dirs`, and
added over the API (stored) — and what a create or a PATCH by template turns into: a ContainerSpec whose
environment is built as Wings builds it, its variables checked against their rules."""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from pydantic import ValidationError

from lightd.config import Config
from lightd.errors import AlreadyExists, Conflict, LightdError, NotFound, ValidationFailed
from lightd.http import validation_error
from lightd.servers.models import ContainerSpec
from lightd.store import Store
from lightd.templates.eggs import import_egg, is_egg
from lightd.templates.fields import TemplateBinding, Variable
from lightd.templates.models import Template, done_pattern, startup_command
from lightd.templates.store import TemplateStore

log = logging.getLogger(__name__)

SHIPPED_DIR = Path(__file__).resolve().parents[2] / "install-scripts"
TEMPLATE_FILE_MAX_BYTES = 2 * 1024 * 1024
INSTALL_MOUNT = "/mnt/server"
# Spec fields a template sets: a create by template that also names one of them is refused.
TEMPLATE_OWNED = ("image", "startup_command", "start_pattern", "install_script", "install_image", "stop",
                  "install_mount", "install_entrypoint", "config_files")
KEPT_ON_PATCH = ("P_SERVER_UUID", "TZ")


def _bad(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", details=[{"field": field, "message": message}])


def parse_template(body: dict[str, Any], template_id: str | None, source: str) -> Template:
    """An egg or lightd's own form as a Template; ValidationFailed naming the field."""
    if is_egg(body):
        template = import_egg(body, template_id)
    else:
        data = {**body, "id": template_id or body.get("id")}
        data.pop("source", None)
        try:
            template = Template.model_validate(data)
        except ValidationError as exc:
            raise validation_error(exc) from None
    return template.model_copy(update={"source": source})


def _read_dir(directory: Path, source: str) -> list[Template]:
    """Every `*.json` of a directory as a Template (blocking); broken ones are logged and skipped."""
    found = []
    for path in sorted(directory.glob("*.json")) if directory.is_dir() else []:
        try:
            if path.stat().st_size > TEMPLATE_FILE_MAX_BYTES:
                raise ValueError(f"larger than {TEMPLATE_FILE_MAX_BYTES} bytes")
            body = orjson.loads(path.read_bytes())
            if not isinstance(body, dict):
                raise ValueError("not a JSON object")
            found.append(parse_template(body, path.stem, source))
        except (OSError, ValueError, LightdError) as exc:
            log.warning("template %s not loaded: %s", path, exc)
    return found


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"  # as PHP's (string) cast: what egg scripts compare with
    return "" if value is None else str(value)


def variable_values(definitions: list[Variable], given: Any, current: dict[str, str] | None = None) -> dict[str, str]:
    """Every variable's value: `given`, else `current` (a PATCH), else its default; each checked against its
    rules. ValidationFailed naming `variables.<ENV>` for an unknown, non-editable (PATCH) or bad value."""
    if not isinstance(given, dict):
        raise _bad("variables", "must be an object of ENV_NAME -> value")
    known = {d.env: d for d in definitions}
    for name, value in given.items():
        if name not in known:
            raise _bad(f"variables.{name}", f"not a variable of this template (known: {', '.join(known) or 'none'})")
        if current is not None and not known[name].editable and _text(value) != current.get(name):
            raise _bad(f"variables.{name}", "not editable: set when the server is created")
        if isinstance(value, (dict, list)) or len(_text(value)) > 16_384:
            raise _bad(f"variables.{name}", "must be a string, number or boolean of at most 16384 characters")
    values = {}
    for d in definitions:
        value = _text(given[d.env]) if d.env in given else (current or {}).get(d.env, d.default)
        problem = d.check(value)
        if problem:
            raise _bad(f"variables.{d.env}", problem)
        values[d.env] = value
    return values


class TemplateService:
    """The node's templates by id; files first (shipped, then `templates.dirs`), then the API's."""

    def __init__(self, config: Config, store: Callable[[], Store]) -> None:
        self.config = config
        self.store = TemplateStore(store)
        self._templates: dict[str, Template] = {}

    async def open(self) -> None:
        """Load the files and the stored templates."""
        sources = [(SHIPPED_DIR, "shipped")] + [(Path(d), "directory") for d in self.config.templates.dirs]
        for directory, source in sources:
            for template in await asyncio.to_thread(_read_dir, directory, source):
                self._templates[template.id] = template
        for body in await self.store.all():
            try:
                template = Template.model_validate(body)
            except ValidationError as exc:
                log.warning("stored template %s not loaded: %s", body.get("id"), validation_error(exc))
                continue
            self._templates.setdefault(template.id, template)

    def list(self) -> list[dict[str, Any]]:
        """A summary of every template, by id."""
        return [self._templates[i].summary() for i in sorted(self._templates)]

    def get(self, template_id: str) -> Template:
        template = self._templates.get(template_id)
        if template is None:
            raise NotFound(f"template {template_id} not found")
        return template

    async def add(self, body: dict[str, Any], template_id: str | None = None) -> Template:
        """Import an egg or a template in lightd's form and store it; 409 when the id is taken."""
        template = parse_template(body, template_id, "api")
        if template.id in self._templates:
            raise AlreadyExists(f"template {template.id} already exists (delete it first, or choose another ?id=)")
        if await self.store.count() >= self.config.templates.max_stored:
            raise Conflict(f"at most {self.config.templates.max_stored} templates may be added (templates.max_stored)")
        await self.store.put(template.id, template.model_dump(mode="json"))
        self._templates[template.id] = template
        return template

    async def delete(self, template_id: str) -> None:
        """Forget a template added over the API (servers made from it keep what they took from it)."""
        template = self.get(template_id)
        if template.source != "api":
            raise Conflict(f"template {template_id} comes from a file ({template.source}): remove the file instead")
        await self.store.delete(template_id)
        self._templates.pop(template_id, None)

    # -- servers from templates --------------------------------------------------------------------------
    def spec_for_create(self, body: dict[str, Any]) -> ContainerSpec:
        """The ContainerSpec of a create by template (`template`, `variables`, `image_label?` and the spec's
        own fields but those the template sets); ValidationFailed naming the field."""
        if not isinstance(body.get("template"), str):
            raise _bad("template", "must be the id of a template")
        for name in TEMPLATE_OWNED:
            if name in body:
                raise _bad(name, "set by the template: leave it out when creating from a template")
        try:
            template = self.get(body["template"])
        except NotFound as exc:
            raise _bad("template", str(exc)) from None
        values = variable_values(template.variables, body.get("variables") or {})
        try:
            label, image = template.image_for(body.get("image_label"))
        except KeyError:
            raise _bad("image_label", f"not a label of the template's images ({', '.join(template.images)})") from None
        image_map = self.config.docker.image_map
        install_image = template.install.image if template.install.script else None
        data = {k: v for k, v in body.items() if k not in ("template", "variables", "image_label")}
        extra = data.get("environment") or {}
        data.update(
            image=image_map.get(image, image),
            startup_command=startup_command(template.startup),
            start_pattern=done_pattern(template.done),
            stop=template.stop.model_dump(),
            install_script=template.install.script,
            install_image=image_map.get(install_image, install_image) if install_image else None,
            install_mount=INSTALL_MOUNT,
            install_entrypoint=template.install.entrypoint if template.install.script else None,
            config_files=[c.model_dump() for c in template.config_files],
            # As Wings builds it: the variables, P_SERVER_UUID and TZ here; STARTUP, SERVER_MEMORY, SERVER_IP
            # and SERVER_PORT from the spec when its containers are made.
            environment={**(extra if isinstance(extra, dict) else {}), **values,
                         "P_SERVER_UUID": str(uuid.uuid4()), "TZ": self.config.templates.timezone},
            template=TemplateBinding(id=template.id, image_label=label, variables=values,
                                     definitions=template.variables, file_denylist=template.file_denylist).model_dump(),
        )
        try:
            return ContainerSpec.model_validate(data)
        except ValidationError as exc:
            raise validation_error(exc) from None


def patch_changes(spec: ContainerSpec, changes: dict[str, Any]) -> dict[str, Any]:
    """A PATCH's changes with `variables` checked against the server's template (rules apply again) and
    turned into its environment; an `environment` that would bypass a variable's rules is refused."""
    binding = spec.template
    if binding is None:
        if "variables" in changes:
            raise _bad("variables", "this server was not made from a template")
        return changes
    changes = dict(changes)
    values = binding.variables
    if "variables" in changes:
        values = variable_values(binding.definitions, changes.pop("variables"), binding.variables)
        changes["template"] = binding.model_copy(update={"variables": values}).model_dump()
    if "environment" in changes or "template" in changes:
        given = changes.get("environment", spec.environment)
        for name, value in given.items() if "environment" in changes else ():
            if name in values and value not in (values[name], binding.variables.get(name)):
                raise _bad(f"environment.{name}", "a template variable: change it through `variables`")
        kept = {k: spec.environment[k] for k in KEPT_ON_PATCH if k in spec.environment}
        changes["environment"] = {**kept, **given, **values}
    return changes
