"""LXC Tools request bodies and the validation the real server applies (names, images, rule names), plus
SSH public-key checking for `authkey`. Every refusal is a ValidationFailed (400)."""

from __future__ import annotations

import base64
import binascii
import re
import struct
from typing import Any

import orjson
from aiohttp import web

from lightd.errors import ValidationFailed

NAME_MAX = 64
IMAGE_MAX = 128
KEY_MAX = 16 * 1024
KEY_FILE_MAX = 64 * 1024
KEY_TYPES = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384", "ecdsa-sha2-nistp521")
_KEY_LINE = re.compile(r"^(?P<type>[a-z0-9-]+) (?P<blob>[A-Za-z0-9+/]+={0,2})(?: (?P<comment>[^\r\n\x00]*))?$")


def _alnum_after_strip(value: str) -> bool:
    # The real tool: alphanumeric once '-' and '_' are removed. Python's isalnum admits Unicode
    # letters and digits ('x²'), which Docker refuses: lightd also requires ASCII.
    stripped = value.replace("-", "").replace("_", "")
    return bool(stripped) and stripped.isascii() and stripped.isalnum()


def valid_container_name(value: Any) -> bool:
    """The real `validateContainerName`, made ASCII-only: 1-64 characters, alphanumeric after removing
    '-' and '_'. Nothing that could reach a shell or a path ('..', '/', ';', spaces) passes."""
    return isinstance(value, str) and 0 < len(value) <= NAME_MAX and _alnum_after_strip(value)


def check_container_name(value: Any) -> str:
    if not valid_container_name(value):
        raise ValidationFailed("Invalid container name",
                               details="1-64 ASCII letters, digits, '-' or '_', with at least one letter or digit")
    return value


def check_image_name(value: Any) -> str:
    """The real `validateImageName`: at most 128 characters with one or two colons (`ubuntu:20.04`)."""
    if (not isinstance(value, str) or not 0 < len(value) <= IMAGE_MAX or value.count(":") not in (1, 2)
            or not value.isascii() or any(c.isspace() or c == "\x00" for c in value)):
        raise ValidationFailed("Invalid image name", details="e.g. 'ubuntu:20.04' (at most 128 characters)")
    return value


def check_rule_name(value: Any) -> str:
    if not isinstance(value, str) or len(value) > NAME_MAX or not _alnum_after_strip(value):
        raise ValidationFailed("Invalid rule name", details="1-64 ASCII letters, digits, '-' or '_'")
    return value


async def read_body(request: web.Request, *, optional: bool = False) -> dict[str, Any] | None:
    """The JSON object body; None when `optional` and the body is empty. Malformed JSON is a 400 (the
    documented code; the real Flask server answers 500)."""
    raw = await request.read()
    if not raw.strip():
        if optional:
            return None
        raise ValidationFailed("Request body must be JSON", details="send a JSON object with Content-Type: application/json")
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise ValidationFailed("Invalid JSON", details=str(exc)) from None
    if not isinstance(data, dict):
        raise ValidationFailed("Invalid JSON", details="the body must be a JSON object")
    return data


def parse_create(body: dict[str, Any]) -> tuple[str, str]:
    """`{"name", "image"}` -> (name, image)."""
    if not body.get("name") or not body.get("image"):
        raise ValidationFailed("Missing required fields: image, name")
    return check_container_name(body["name"]), check_image_name(body["image"])


def parse_portforward(body: dict[str, Any]) -> tuple[str, str | None, str | None]:
    """`{"name", "ip"?, "protocol"?}` -> (rule, ip, protocol). ip/protocol narrow the pool port taken."""
    if not body.get("name"):
        raise ValidationFailed("Missing required field: name")
    rule = check_rule_name(body["name"])
    ip, protocol = body.get("ip"), body.get("protocol")
    if ip is not None and not isinstance(ip, str):
        raise ValidationFailed("Invalid ip", details="an IPv4 or IPv6 address")
    if protocol is not None and protocol not in ("tcp", "udp"):
        raise ValidationFailed("Invalid protocol", details="tcp or udp")
    return rule, ip, protocol


def check_public_key(line: Any) -> str:
    """One OpenSSH public key line `type base64 [comment]`, checked: a known type, a blob that decodes and
    names the same type, a comment on the same line. Options (`command="..."`) are refused."""
    # SECURITY: the key is appended to authorized_keys; a newline or an options prefix would let a
    # client add a second, unchecked entry or a forced command.
    if not isinstance(line, str) or not 0 < len(line) <= KEY_MAX:
        raise ValidationFailed("Invalid SSH public key", details=f"a single key line of at most {KEY_MAX} characters")
    line = line.strip()
    match = _KEY_LINE.match(line)
    if match is None or match["type"] not in KEY_TYPES:
        raise ValidationFailed("Invalid SSH public key",
                               details=f"expected '<type> <base64> [comment]' with type one of {', '.join(KEY_TYPES)}")
    try:
        blob = base64.b64decode(match["blob"], validate=True)
        (length,) = struct.unpack(">I", blob[:4])
        embedded = blob[4:4 + length].decode("ascii")
    except (binascii.Error, struct.error, UnicodeDecodeError):
        raise ValidationFailed("Invalid SSH public key", details="the key data is not valid base64 key material") from None
    if embedded != match["type"] or len(blob) <= 4 + length:
        raise ValidationFailed("Invalid SSH public key", details="the key data does not match its type")
    return line


def parse_authkey(body: dict[str, Any] | None) -> list[str] | None:
    """`{"key": "..."}` or `{"keys": [...]}` -> checked key lines; None when the body names no key."""
    if body is None:
        return None
    if "keys" in body:
        keys = body["keys"]
        if not isinstance(keys, list) or not 0 < len(keys) <= 64:
            raise ValidationFailed("Invalid SSH public key", details="keys: a list of 1 to 64 key lines")
        return [check_public_key(k) for k in keys]
    if "key" in body:
        return [check_public_key(body["key"])]
    return None


def parse_key_file(text: str) -> list[str]:
    """The keys of an authorized_keys-style file (blank lines and comments skipped), each checked."""
    return [check_public_key(line) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]
