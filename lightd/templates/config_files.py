"""Wings' config-file parsers as pure functions, bytes in and bytes out: `properties`, `yaml`, `json`, `ini`,
`xml` and `file`. `find` keys are dotted paths; `a.*.b` sets `b` in every child of `a` (one wildcard, as
Wings); `a[0].b` reaches into a list. Placeholders (`{{server.build.default.port}}`…) are resolved from an
explicit table of values, never from the daemon's config (SECURITY: template injection, Wings advisory 9).
The input is bounded by the caller (lightd/templates/edits.py); nothing here follows a file reference."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import re2

from lightd.templates.fields import ConfigFile

PLACEHOLDER = re.compile(r"\{\{\s*([\w.-]+)\s*\}\}")
_ARRAY = re.compile(r"^([^\[\]]+)\[(\d{1,6})\]$")
_XML_ATTRIBUTE = re.compile(r"^\[(\w+)='(.*)'\]$")
_INI_LINE = re.compile(r"^(\s*)([^=:#;\s][^=:]*?)(\s*[=:]\s*)(.*)$")


class ConfigFileError(ValueError):
    """A file a parser cannot read (not valid JSON, YAML, XML…): left as it is."""


@dataclass(frozen=True, slots=True)
class Edit:
    """One replacement with its placeholders resolved."""

    match: str
    if_value: str | None
    value: Any


def resolve(text: str, values: dict[str, str]) -> str:
    """Replace every `{{name}}` known in `values`; `{{env.X}}` is `{{server.build.env.X}}` (the Panel's
    shorthand); an unknown `server.*` name becomes empty (as the Panel does), anything else stays as written."""

    def one(match: re.Match[str]) -> str:
        name = match.group(1)
        if name.startswith("env."):
            name = "server.build." + name
        if name in values:
            return values[name]
        return "" if name.startswith("server.") else match.group(0)

    return PLACEHOLDER.sub(one, text)


def edits_of(config_file: ConfigFile, values: dict[str, str]) -> list[Edit]:
    edits = []
    for r in config_file.replace:
        value: Any = r.replace_with
        if isinstance(value, str):
            value = resolve(value, values)
        edits.append(Edit(r.match, r.if_value, value))
    return edits


def apply(parser: str, data: bytes, edits: list[Edit]) -> bytes:
    """The file after `edits`; ConfigFileError when it cannot be parsed."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise ConfigFileError("not UTF-8 text") from None
    handler: Callable[[str, list[Edit]], str] = _PARSERS["yaml" if parser == "yml" else parser]
    return handler(text, edits).encode("utf-8")


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


def _typed(value: Any) -> Any:
    """What a JSON or YAML file gets (Wings' getKeyValue): booleans stay, integer text becomes a number."""
    if isinstance(value, str) and re.fullmatch(r"[+-]?[0-9]{1,18}", value):
        return int(value)
    return value


# -- properties ------------------------------------------------------------------------------------------
def _properties_key(line: str) -> str | None:
    stripped = line.lstrip()
    if not stripped or stripped[0] in "#!":
        return None
    key = re.split(r"(?<!\\)[=:\s]", stripped, maxsplit=1)[0]
    return key.replace("\\", "")


def _properties_escape(value: str) -> str:
    # As Wings writes them: non-ASCII as \uXXXX, so every Java properties reader gets the same characters.
    out = value.replace("\\", "\\\\").replace("\n", "\\n").replace("\r", "\\r")
    return "".join(c if ord(c) < 128 else "".join(f"\\u{u:04x}" for u in _utf16(c)) for c in out)


def _utf16(char: str) -> list[int]:
    raw = char.encode("utf-16-be")
    return [int.from_bytes(raw[i:i + 2], "big") for i in range(0, len(raw), 2)]


def _properties_value(line: str) -> str:
    stripped = line.lstrip()
    parts = re.split(r"(?<!\\)\s*[=:]\s*|(?<!\\)\s+", stripped, maxsplit=1)
    return parts[1] if len(parts) > 1 else ""


def _properties(text: str, edits: list[Edit]) -> str:
    lines = text.splitlines()
    for edit in edits:
        index = next((i for i, line in enumerate(lines) if _properties_key(line) == edit.match), None)
        if edit.if_value is not None and (index is None or _properties_value(lines[index]) != edit.if_value):
            continue
        line = f"{edit.match}={_properties_escape(_text(edit.value))}"
        if index is None:
            lines.append(line)
        else:
            lines[index] = line
    return "\n".join(lines) + "\n"


# -- JSON and YAML (one tree walker) -------------------------------------------------------------------------
def _step(node: Any, name: str, create: bool) -> Any:
    array = _ARRAY.match(name)
    key, index = (array.group(1), int(array.group(2))) if array else (name, None)
    if not isinstance(node, dict):
        return None
    if key not in node:
        if not create:
            return None
        node[key] = [] if index is not None else {}
    child = node[key]
    if index is None:
        return child
    if not isinstance(child, list):
        return None
    if index == len(child) == 0 and create:
        child.append({})
    return child[index] if index < len(child) else None


def _set(node: Any, path: str, edit: Edit) -> None:
    parts = [p for p in path.split(".") if p]
    if not parts:
        return
    for name in parts[:-1]:
        node = _step(node, name, create=edit.if_value is None)
        if node is None:
            return
    last = parts[-1]
    array = _ARRAY.match(last)
    if array:
        container = _step(node, array.group(1), create=False)
        index = int(array.group(2))
        if isinstance(container, list) and index < len(container):
            container[index] = _new_value(container[index], edit, True)
        return
    if not isinstance(node, dict):
        return
    exists = last in node
    if edit.if_value is not None and not exists:
        return
    new = _new_value(node.get(last), edit, exists)
    if new is not _SKIP:
        node[last] = new


_SKIP = object()


def _new_value(current: Any, edit: Edit, exists: bool) -> Any:
    if edit.if_value is None:
        return _typed(edit.value)
    if edit.if_value.startswith("regex:"):
        # The egg's own expression over the file's value: RE2, linear in the value.
        try:
            pattern = re2.compile(edit.if_value[len("regex:"):])
        except re2.error:
            return _SKIP
        old = _text(current)
        return pattern.sub(_text(edit.value), old) if pattern.search(old) else _SKIP
    return _typed(edit.value) if exists and _text(current) == edit.if_value else _SKIP


def _edit_tree(tree: Any, edits: list[Edit]) -> Any:
    for edit in edits:
        if ".*" in edit.match:
            head, _, tail = edit.match.partition(".*")
            parent = tree
            for name in [p for p in head.split(".") if p]:
                parent = _step(parent, name, create=False)
            children = parent.values() if isinstance(parent, dict) else parent if isinstance(parent, list) else []
            for child in list(children):
                if tail.strip("."):
                    _set(child, tail.strip("."), edit)
            continue
        _set(tree, edit.match, edit)
    return tree


def _json(text: str, edits: list[Edit]) -> str:
    try:
        tree = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise ConfigFileError(f"not JSON: {exc}") from None
    return json.dumps(_edit_tree(tree, edits), indent=4, ensure_ascii=False) + "\n"


def _yaml(text: str, edits: list[Edit]) -> str:
    import yaml  # here, not at the top: PyYAML is 12 ms of the daemon's start-up, for a file few servers have

    try:
        tree = yaml.safe_load(text) if text.strip() else {}
    except yaml.YAMLError as exc:
        raise ConfigFileError(f"not YAML: {exc}") from None
    tree = {} if tree is None else tree
    return yaml.safe_dump(_edit_tree(tree, edits), sort_keys=False, allow_unicode=True)


# -- ini ------------------------------------------------------------------------------------------------
def _ini_path(match: str) -> tuple[str, str]:
    """`section.key` (a dot inside [brackets], or after the first, belongs to the name); no dot: no section."""
    depth = 0
    for i, char in enumerate(match):
        depth += char == "["
        depth -= char == "]"
        if char == "." and depth == 0:
            return match[:i], match[i + 1:]
    return "", match


def _ini(text: str, edits: list[Edit]) -> str:
    lines = text.splitlines()
    for edit in edits:
        section, key = _ini_path(edit.match)
        start, end = 0, len(lines)
        if section:
            header = next((i for i, line in enumerate(lines) if line.strip() == f"[{section}]"), None)
            if header is None:
                if edit.if_value is None:
                    lines += ([""] if lines else []) + [f"[{section}]", f"{key} = {_text(edit.value)}"]
                continue
            start = header + 1
        end = next((i for i in range(start, len(lines)) if lines[i].strip().startswith("[")), len(lines))
        found = None
        for i in range(start, end):
            m = _INI_LINE.match(lines[i])
            if m and m.group(2).strip() == key:
                found = (i, m)
                break
        if found is None:
            if edit.if_value is None:
                last = max([i for i in range(start, end) if lines[i].strip()] or [start - 1])
                lines.insert(last + 1, f"{key} = {_text(edit.value)}")
            continue
        i, m = found
        if edit.if_value is not None and m.group(4).strip() != edit.if_value:
            continue
        lines[i] = f"{m.group(1)}{m.group(2)}{m.group(3)}{_text(edit.value)}"
    return "\n".join(lines) + "\n"


# -- xml ------------------------------------------------------------------------------------------------
def _xml(text: str, edits: list[Edit]) -> str:
    # SECURITY: entity expansion — a document type (where entities are declared) is refused outright.
    if re.search(r"<!DOCTYPE|<!ENTITY", text, re.IGNORECASE):
        raise ConfigFileError("XML with a document type declaration is not edited")
    root: ET.Element | None = None
    if text.strip():
        parser = ET.XMLParser(target=ET.TreeBuilder(insert_comments=True, insert_pis=True))
        try:
            root = ET.fromstring(text, parser=parser)
        except ET.ParseError as exc:
            raise ConfigFileError(f"not XML: {exc}") from None
    for edit in edits:
        parts = [p for p in edit.match.split(".") if p]
        if not parts:
            continue
        if root is None:
            root = ET.Element(parts[0])
        if root.tag != parts[0]:
            continue
        rest = parts[1:]
        if "*" not in edit.match:
            element = root
            for tag in rest:
                child = element.find(tag)
                element = child if child is not None else ET.SubElement(element, tag)
        targets = root.findall("/".join(rest)) if rest else [root]
        value = _text(edit.value)
        attribute = _XML_ATTRIBUTE.match(value)
        for element in targets:
            if attribute:
                element.set(attribute.group(1), attribute.group(2))
            else:
                element.text = value
    if root is None:
        return text
    ET.indent(root, "  ")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


# -- file -----------------------------------------------------------------------------------------------
def _file(text: str, edits: list[Edit]) -> str:
    """Plain text: a line starting with `match` is replaced by the value, whole (Wings' `file` parser)."""
    out = []
    for line in text.splitlines():
        for edit in edits:
            if line.startswith(edit.match):
                line = _text(edit.value)
        out.append(line)
    return "\n".join(out) + "\n"


_PARSERS: dict[str, Callable[[str, list[Edit]], str]] = {
    "properties": _properties, "yaml": _yaml, "json": _json, "ini": _ini, "xml": _xml, "file": _file,
}
