"""Changes to a site's text that keep the installer's comments and layout (tomlkit)."""

from typing import TYPE_CHECKING

from vaxelbox.site.fields import colon_mac

if TYPE_CHECKING:  # tomlkit is imported by an edit: the agent edits its site only when an installer asks
    import tomlkit
    from tomlkit.items import AoT


class EditError(ValueError):
    """The change cannot be made; the message says why."""


def assign_phone(
    source: str, mac: str, users: list[str], vendor: str | None, model: str | None, dect: bool = False
) -> str:
    """Add a phone (or replace the one with this MAC) with `users` on its lines or handsets."""
    import tomlkit

    document = tomlkit.parse(source)
    phones = _phones(document)
    phone = tomlkit.table()
    phone.trivia.indent = "\n"  # a blank line before the new table, as people write them
    phone["mac"] = colon_mac(mac)
    if dect:
        phone["type"] = "dect"
    if vendor:
        phone["vendor"] = vendor
    if model:
        phone["model"] = model
    phone["handsets" if dect else "lines"] = users
    index = _index(phones, mac)
    if index is None:
        phones.append(phone)
    else:
        phones[index] = phone
    return tomlkit.dumps(document)


def unassign_phone(source: str, mac: str) -> str:
    import tomlkit

    document = tomlkit.parse(source)
    phones = _phones(document)
    index = _index(phones, mac)
    if index is None:
        raise EditError(f"no phone with MAC {colon_mac(mac)} in the site")
    del phones[index]
    if not phones:
        del document["phones"]
    return tomlkit.dumps(document)


def _phones(document: "tomlkit.TOMLDocument") -> "AoT":
    import tomlkit
    from tomlkit.items import AoT

    if "phones" not in document:
        document.append("phones", tomlkit.aot())
    phones = document["phones"]
    if not isinstance(phones, AoT):
        raise EditError("the site's phones are not written as [[phones]] tables; edit the file by hand")
    return phones


def _index(phones: "AoT", mac: str) -> int | None:
    from tomlkit.items import Table

    for i, phone in enumerate(phones):
        if isinstance(phone, Table) and _bare(str(phone.get("mac", ""))) == mac:
            return i
    return None


def _bare(mac: str) -> str:
    return mac.replace(":", "").replace("-", "").replace(".", "").lower()
