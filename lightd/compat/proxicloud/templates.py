"""ProxiCloud templates over lightd images. A template id is resolved as every front end resolves image
names (`docker.image_map` first, then a local image of that exact name). The featured list is ProxiCloud's
usual set of Proxmox templates, available when the image map names a local image for them; `/all` adds
every mapped name and every local image."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from lightd.errors import NotFound, ValidationFailed

if TYPE_CHECKING:
    from lightd.compat.base import CompatServices

FEATURED: tuple[tuple[str, str, str, str, str], ...] = (
    ("ubuntu-24.04-standard", "Ubuntu 24.04 LTS", "Ubuntu 24.04 Noble Numbat (LTS)", "ubuntu", "24.04"),
    ("ubuntu-22.04-standard", "Ubuntu 22.04 LTS", "Ubuntu 22.04 Jammy Jellyfish (LTS)", "ubuntu", "22.04"),
    ("debian-12-standard", "Debian 12", "Debian 12 Bookworm", "debian", "12"),
    ("alpine-3.19-default", "Alpine 3.19", "Alpine Linux 3.19", "alpine", "3.19"),
    ("rockylinux-9-default", "Rocky Linux 9", "Rocky Linux 9 (Blue Onyx)", "rockylinux", "9"),
)
ARCHITECTURES = {"x86_64": "amd64", "aarch64": "arm64"}
_VZTMPL = re.compile(r"^[^:/]+:vztmpl/(?P<file>[^/]+)$")


def template_id(value: str) -> str:
    """A Proxmox volume id (`local:vztmpl/ubuntu-24.04-standard_24.04-1_amd64.tar.zst`, the real
    ProxiCloud's `ostemplate`) -> its template id (`ubuntu-24.04-standard`); anything else unchanged."""
    match = _VZTMPL.match(value)
    if match is None:
        return value
    return match["file"].split("_", 1)[0]


@dataclass(frozen=True, slots=True)
class LocalImage:
    tag: str
    image_id: str
    size: int


class TemplateCatalogue:
    """Templates from the config's image map and the engine's images."""

    def __init__(self, services: CompatServices) -> None:
        self.services = services

    async def resolve(self, template: str) -> str:
        """The local image for a template id; 400 `Template 'x' not found` otherwise."""
        try:
            return await self.services.resolve_image(template)
        except ValidationFailed:
            raise ValidationFailed(f"Template '{template}' not found") from None

    async def checked(self, value: str) -> str:
        """The template id a create names (an id, or a Proxmox `ostemplate`), checked to exist: 400 before
        anything is made."""
        template = template_id(value)
        await self.resolve(template)
        return template

    async def _images(self) -> dict[str, LocalImage]:
        images: dict[str, LocalImage] = {}
        for image in await self.services.servers.engine.list_images():
            for tag in image.get("RepoTags") or []:
                if tag != "<none>:<none>":
                    images[tag] = LocalImage(tag, str(image.get("Id", "")), int(image.get("Size") or 0))
        return images

    def _entry(self, template: str, images: dict[str, LocalImage]) -> dict[str, Any]:
        featured = next((f for f in FEATURED if f[0] == template), None)
        target = self.services.config.docker.image_map.get(template, template)
        local = images.get(target)
        if featured is not None:
            _, name, description, distribution, version = featured
        else:
            distribution, _, version = target.rpartition("/")[2].partition(":")
            version = version or "latest"
            name = template
            description = f"lightd image {target}"
        return {
            "id": template, "name": name, "description": description, "distribution": distribution,
            "version": version, "featured": featured is not None, "size": local.size if local else 0,
            "available": local is not None,
        }

    async def featured(self) -> list[dict[str, Any]]:
        images = await self._images()
        return [self._entry(f[0], images) for f in FEATURED]

    async def all(self) -> list[dict[str, Any]]:
        images = await self._images()
        ids = [f[0] for f in FEATURED]
        ids += [name for name in sorted(self.services.config.docker.image_map) if name not in ids]
        ids += [tag for tag in sorted(images) if tag not in ids]
        return [self._entry(template, images) for template in ids]

    async def info(self, template: str) -> dict[str, Any]:
        """One template with its image's details; 404 for an id that is neither mapped, featured nor local."""
        images = await self._images()
        known = (template in images or template in self.services.config.docker.image_map
                 or any(f[0] == template for f in FEATURED))
        if not known:
            raise NotFound(f"Template '{template}' not found")
        entry = self._entry(template, images)
        target = self.services.config.docker.image_map.get(template, template)
        local = images.get(target)
        architecture = str((await self.services.servers.engine.engine_info()).get("Architecture") or "")
        return {
            **{k: v for k, v in entry.items() if k != "featured"},
            "architecture": ARCHITECTURES.get(architecture, architecture),
            "checksum": local.image_id if local else None,
            "url": None,
            "available": local is not None,
            "storage": "local",
            "path": target,
        }
