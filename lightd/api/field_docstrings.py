"""Fields' docstrings as their JSON-schema descriptions (`View`'s, api/route_docs.py), read when a schema is
first made: what pydantic's `use_attribute_docstrings` does at import, where on Python < 3.13 it walks frames
and re-reads source for each class (35 ms of the daemon's start-up for ~70 response models)."""

from __future__ import annotations

import ast
import functools
import inspect
import itertools
import sys
import textwrap
from typing import Any

from pydantic import BaseModel


def describe_fields(model: type[BaseModel], schema: dict[str, Any]) -> None:
    """Describe each property of `model`'s object `schema` with its field's docstring, unless the field has a
    description of its own."""
    properties = schema.get("properties", {})
    for name, field in model.model_fields.items():
        prop = properties.get(field.alias or name)
        doc = field_docstring(model, name)
        if prop is not None and doc is not None and field.description is None:
            prop["description"] = doc


def field_docstring(model: type, name: str) -> str | None:
    """The docstring of field `name` in the class that last declares it (one that declares it again without a
    docstring has none, as with pydantic's reading)."""
    for klass in model.__mro__:
        if name in inspect.get_annotations(klass):
            return _declared_docstrings(klass).get(name)
    return None


@functools.cache
def _declared_docstrings(klass: type) -> dict[str, str]:
    """The docstrings of the fields `klass` itself declares: a string right after an annotated assignment."""
    try:
        node = _top_level_classes(klass.__module__).get(klass.__qualname__)
        if node is None:  # a nested class
            node = ast.parse(textwrap.dedent(inspect.getsource(klass))).body[0]
    except (OSError, TypeError):  # no source (bytecode only): no descriptions, as with pydantic's reading
        return {}
    if not isinstance(node, ast.ClassDef):
        return {}
    body = node.body
    return {statement.target.id: inspect.cleandoc(after.value.value)
            for statement, after in itertools.pairwise(body)
            if isinstance(statement, ast.AnnAssign) and isinstance(statement.target, ast.Name)
            and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
            and isinstance(after.value.value, str)}


@functools.cache
def _top_level_classes(module: str) -> dict[str, ast.ClassDef]:
    """The classes at the top of `module`'s source, by name (each module parsed once)."""
    tree = ast.parse(inspect.getsource(sys.modules[module]))
    return {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
