"""Laravel-style validation rules of template variables (`required|string|max:20`, `in:a,b`, `regex:/…/`), as
Pterodactyl eggs write them: parsed once at import (an unknown rule is reported then) and checked on every
value a create or a PATCH sets. Regular expressions run on RE2: the value is the tenant's."""

from __future__ import annotations

import re
from dataclasses import dataclass

import re2

# Rules whose meaning lightd enforces. `sometimes`, `present` and `filled` say nothing about a value lightd
# always has; they are accepted and do nothing.
KNOWN = frozenset({
    "required", "nullable", "sometimes", "present", "filled", "string", "integer", "numeric", "boolean",
    "max", "min", "size", "between", "in", "not_in", "regex", "not_regex", "alpha", "alpha_num", "alpha_dash",
    "url", "digits", "digits_between",
})
_BOOLEANS = ("1", "0", "true", "false")
_INTEGER = re.compile(r"^[+-]?[0-9]+$")
_NUMBER = re.compile(r"^[+-]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?$")
_URL = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://[^\s/?#]+[^\s]*$")
_REGEX_RULE = re.compile(r"^\s*((?:not_)?regex:(.).*?\2[a-zA-Z]*)\s*(?:\||$)")
MAX_RULES_LENGTH = 4096


class RuleError(ValueError):
    """A rule lightd cannot read (bad argument, bad regular expression)."""


@dataclass(frozen=True, slots=True)
class Rule:
    name: str
    args: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Rules:
    """The parsed rules of one variable; `unknown` lists rules lightd does not know (reported, not enforced)."""

    rules: tuple[Rule, ...]
    unknown: tuple[str, ...] = ()

    def has(self, name: str) -> bool:
        return any(r.name == name for r in self.rules)

    def check(self, value: str | None) -> str | None:
        """The problem with `value` (None: fine). An empty value is fine when it is `nullable` and not `required`."""
        if value is None or value == "":
            if self.has("required"):
                return "is required"
            return None if self.has("nullable") or not self.rules else ("must not be empty" if self._typed() else None)
        numeric = self.has("integer") or self.has("numeric")
        for rule in self.rules:
            problem = _check_one(rule, value, numeric)
            if problem:
                return problem
        return None

    def _typed(self) -> bool:
        return any(self.has(n) for n in ("integer", "numeric", "boolean", "in", "regex", "min", "between", "digits"))


def parse_rules(rules: str | list[str] | None) -> Rules:
    """Parse `rules` (a `|`-separated string, or Pelican's list); RuleError for one lightd cannot read."""
    if rules is None:
        return Rules(())
    if isinstance(rules, list):
        parts = [str(p) for p in rules]
    else:
        if len(rules) > MAX_RULES_LENGTH:
            raise RuleError(f"longer than {MAX_RULES_LENGTH} characters")
        parts = _split(rules)
    parsed: list[Rule] = []
    unknown: list[str] = []
    for part in parts:
        name, _, arg = part.strip().partition(":")
        name = name.strip().lower()
        if not name:
            continue
        if name not in KNOWN:
            unknown.append(name)
            continue
        args = (arg,) if name in ("regex", "not_regex") else tuple(a.strip() for a in arg.split(",")) if arg else ()
        rule = Rule(name, args)
        _check_args(rule)
        parsed.append(rule)
    return Rules(tuple(parsed), tuple(unknown))


def _split(rules: str) -> list[str]:
    """Split on `|`, except inside a `regex:/…/` (whose pattern may hold a `|`)."""
    parts: list[str] = []
    rest = rules
    while rest:
        match = _REGEX_RULE.match(rest)
        if match:
            parts.append(match.group(1))
            rest = rest[match.end():]
            continue
        head, _, rest = rest.partition("|")
        parts.append(head)
    return parts


_COMPILED: dict[str, re2._Regexp] = {}


def compile_php_regex(arg: str) -> re2._Regexp:
    """`/pattern/flags` (PHP's delimiters) as an RE2 program; RuleError when RE2 cannot take it."""
    if arg in _COMPILED:
        return _COMPILED[arg]
    if len(arg) < 2 or arg[0].isalnum() or arg[0] == "\\":
        raise RuleError(f"regex {arg!r}: must be delimited, e.g. /^[a-z]+$/")
    end = arg.rfind(arg[0])
    if end <= 0:
        raise RuleError(f"regex {arg!r}: no closing delimiter")
    pattern, flags = arg[1:end], arg[end + 1:]
    if set(flags) - set("imsxuD"):
        raise RuleError(f"regex {arg!r}: unsupported flags {flags!r}")
    inline = "".join(f for f in flags if f in "ims")
    options = re2.Options()
    options.log_errors = False
    options.never_capture = True
    try:
        compiled = re2.compile((f"(?{inline})" if inline else "") + pattern, options)
    except re2.error:
        raise RuleError(f"regex {arg!r}: not a regular expression lightd can match in linear time (RE2 syntax)") from None
    if len(_COMPILED) < 1024:
        _COMPILED[arg] = compiled
    return compiled


def _number(value: str) -> float:
    return float(value)


def _check_args(rule: Rule) -> None:
    counts = {"max": 1, "min": 1, "size": 1, "between": 2, "digits": 1, "digits_between": 2}
    if rule.name in counts:
        if len(rule.args) != counts[rule.name] or not all(_NUMBER.match(a) for a in rule.args):
            raise RuleError(f"{rule.name}: needs {counts[rule.name]} number(s), got {','.join(rule.args)!r}")
    elif rule.name in ("in", "not_in") and not rule.args:
        raise RuleError(f"{rule.name}: needs a list of values")
    elif rule.name in ("regex", "not_regex"):
        compile_php_regex(rule.args[0] if rule.args else "")


def _size(value: str, numeric: bool) -> float:
    """What max/min/between compare: the number for a numeric variable, else the length."""
    if numeric and _NUMBER.match(value):
        return _number(value)
    return len(value)


def _check_one(rule: Rule, value: str, numeric: bool) -> str | None:  # noqa: PLR0911 - one branch per rule
    name, args = rule.name, rule.args
    if name == "integer" and not _INTEGER.match(value):
        return "must be an integer"
    if name == "numeric" and not _NUMBER.match(value):
        return "must be a number"
    if name == "boolean" and value.lower() not in _BOOLEANS:
        return "must be a boolean (true, false, 1 or 0)"
    if name in ("max", "min", "size", "between"):
        size, bounds = _size(value, numeric), [_number(a) for a in args]
        unit = "" if numeric else " characters"
        if name == "max" and size > bounds[0]:
            return f"must be at most {args[0]}{unit}"
        if name == "min" and size < bounds[0]:
            return f"must be at least {args[0]}{unit}"
        if name == "size" and size != bounds[0]:
            return f"must be exactly {args[0]}{unit}"
        if name == "between" and not bounds[0] <= size <= bounds[1]:
            return f"must be between {args[0]} and {args[1]}{unit}"
    if name == "in" and value not in args:
        return f"must be one of {', '.join(args)}"
    if name == "not_in" and value in args:
        return f"must not be one of {', '.join(args)}"
    if name in ("regex", "not_regex"):
        found = compile_php_regex(args[0]).search(value.encode("utf-8", "replace")) is not None
        if found != (name == "regex"):
            return f"does not match {args[0]}" if name == "regex" else f"must not match {args[0]}"
    if name == "alpha" and not value.isalpha():
        return "must be letters only"
    if name == "alpha_num" and not value.isalnum():
        return "must be letters and digits only"
    if name == "alpha_dash" and not all(c.isalnum() or c in "-_" for c in value):
        return "must be letters, digits, '-' and '_' only"
    if name == "url" and not _URL.match(value):
        return "must be a URL"
    if name in ("digits", "digits_between"):
        if not value.isdigit():
            return "must be digits"
        low, high = (int(float(args[0])),) * 2 if name == "digits" else (int(float(args[0])), int(float(args[1])))
        if not low <= len(value) <= high:
            return f"must have {args[0]} digits" if name == "digits" else f"must have {args[0]} to {args[1]} digits"
    return None
