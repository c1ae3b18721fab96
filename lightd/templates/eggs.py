"""Pterodactyl and Pelican eggs (`PTDL_v1`, `PTDL_v2`, Pelican's `PLCN_v1`…) as published, converted to
lightd's Template. What an egg carries as JSON *strings* inside its JSON (`config.files`, `config.startup`,
`config.logs`) is decoded here; `docker_images` is a label map (v2), `images` a list and `image` one name
(v1). A problem is a ValidationFailed naming the egg's own field."""

from __future__ import annotations

import json
import re
from typing import Any

from pydantic import ValidationError

from lightd.errors import ValidationFailed
from lightd.http import validation_error
from lightd.templates.models import Template
from lightd.templates.rules import RuleError, parse_rules

EGG_VERSIONS = re.compile(r"^(PTDL|PLCN)_v[0-9]+$")


def is_egg(body: dict[str, Any]) -> bool:
    meta = body.get("meta")
    return isinstance(meta, dict) and isinstance(meta.get("version"), str) and bool(EGG_VERSIONS.match(meta["version"]))


def _bad(field: str, message: str) -> ValidationFailed:
    return ValidationFailed(f"{field}: {message}", details=[{"field": field, "message": message}])


def _json_string(config: dict[str, Any], key: str) -> Any:
    """`config.<key>`: a JSON string (as eggs publish it), or already an object; {} when absent or empty."""
    raw = config.get(key)
    if raw is None or raw == "":
        return {}
    if isinstance(raw, (dict, list)):
        return raw
    if not isinstance(raw, str):
        raise _bad(f"config.{key}", "must be a JSON string or object")
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise _bad(f"config.{key}", f"not valid JSON inside the string: {exc.msg} at {exc.pos}") from None


def slug(name: str) -> str:
    text = re.sub(r"[^a-z0-9_.-]+", "-", name.lower()).strip("-._")
    return text[:63] or "egg"


def _images(egg: dict[str, Any]) -> dict[str, str]:
    images = egg.get("docker_images")
    if isinstance(images, dict) and images:
        return {str(k): v for k, v in images.items()}
    if isinstance(egg.get("images"), list) and egg["images"]:
        return {str(i): i for i in egg["images"]}
    if isinstance(egg.get("image"), str):
        return {egg["image"]: egg["image"]}
    raise _bad("docker_images", "the egg names no image (docker_images, images or image)")


def _config_files(files: Any) -> list[dict[str, Any]]:
    if not isinstance(files, dict):
        raise _bad("config.files", "must be an object of file name -> {parser, find}")
    out = []
    for name, entry in files.items():
        if not isinstance(entry, dict) or not isinstance(entry.get("find"), dict):
            raise _bad(f"config.files.{name}", "must be {\"parser\": ..., \"find\": {...}}")
        replace = []
        for match, value in entry["find"].items():
            # A value that is an object maps if_value -> replace_with (the Panel's form).
            if isinstance(value, dict):
                replace += [{"match": match, "if_value": str(k), "replace_with": v} for k, v in value.items()]
            else:
                replace.append({"match": match, "replace_with": value})
        out.append({"file": name, "parser": entry.get("parser", "file"), "replace": replace})
    return out


def _variables(egg: dict[str, Any], warnings: list[str]) -> list[dict[str, Any]]:
    raw = egg.get("variables") or []
    if not isinstance(raw, list):
        raise _bad("variables", "must be a list")
    out = []
    for i, var in enumerate(raw):
        if not isinstance(var, dict):
            raise _bad(f"variables.{i}", "must be an object")
        rules = var.get("rules") or ""
        try:
            parsed = parse_rules(rules)
        except RuleError as exc:
            raise _bad(f"variables.{i}.rules", str(exc)) from None
        warnings += [f"variables.{i}.rules: unknown rule {name!r} is not enforced" for name in parsed.unknown]
        default = var.get("default_value")
        out.append({
            "env": var.get("env_variable"), "name": var.get("name") or "", "description": var.get("description") or "",
            "default": "" if default is None else str(default), "rules": rules,
            "editable": bool(var.get("user_editable", True)),
        })
    return out


_FIELD_NAMES = {"variables": "variables", "images": "docker_images", "startup": "startup", "done": "config.startup.done",
                "stop": "config.stop", "config_files": "config.files", "install": "scripts.installation",
                "file_denylist": "file_denylist", "id": "id"}
_EGG_KEYS = {"env": "env_variable", "default": "default_value", "editable": "user_editable", "image": "container"}


def import_egg(egg: dict[str, Any], template_id: str | None = None) -> Template:
    """The Template of a published egg; ValidationFailed naming the egg's field when it cannot be read."""
    if not is_egg(egg):
        raise _bad("meta.version", "not an egg (PTDL_v1, PTDL_v2 or PLCN_v1 expected)")
    config = egg.get("config") or {}
    if not isinstance(config, dict):
        raise _bad("config", "must be an object")
    startup_config = _json_string(config, "startup")
    _json_string(config, "logs")  # read only to report a broken one: Wings no longer uses it
    warnings: list[str] = []
    install = (egg.get("scripts") or {}).get("installation") or {}
    if not isinstance(install, dict):
        raise _bad("scripts.installation", "must be an object")
    if not isinstance(egg.get("startup"), str) or not egg["startup"]:
        raise _bad("startup", "the egg has no startup command")
    if config.get("extends"):
        warnings.append("config.extends: inherited configuration is not followed; this egg's own values are used")
    done = startup_config.get("done", []) if isinstance(startup_config, dict) else []
    data = {
        "id": template_id or slug(str(egg.get("name") or "egg")),
        "name": str(egg.get("name") or ""), "description": str(egg.get("description") or ""),
        "author": str(egg.get("author") or ""),
        "images": _images(egg),
        "startup": egg["startup"],
        "install": {"script": install.get("script") or None, "image": install.get("container") or None,
                    "entrypoint": install.get("entrypoint") or "bash"},
        "variables": _variables(egg, warnings),
        "done": done,
        "stop": config.get("stop") or "^C",
        "config_files": _config_files(_json_string(config, "files")),
        "file_denylist": [str(p) for p in egg.get("file_denylist") or []],
        "warnings": warnings,
    }
    try:
        return Template.model_validate(data)
    except ValidationError as exc:
        error = validation_error(exc)
        for problem in error.details or []:
            parts = problem["field"].split(".")
            parts[0] = _FIELD_NAMES.get(parts[0], parts[0])
            parts[-1] = _EGG_KEYS.get(parts[-1], parts[-1]) if len(parts) > 1 else parts[-1]
            problem["field"] = ".".join(parts)
        first = (error.details or [{"field": "(body)", "message": "invalid"}])[0]
        raise ValidationFailed(f"{first['field']}: {first['message']}", details=error.details) from None
