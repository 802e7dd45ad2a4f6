"""Where the shared SIP torture corpus lives: ../shared beside the repository, as in CI."""

import csv
from pathlib import Path

CORPUS = Path(__file__).resolve().parents[3] / "shared" / "testdata" / "sip-torture"
assert CORPUS.is_dir(), f"the SIP torture corpus is missing at {CORPUS}: it ships in ../shared"


def manifest(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8") as file:
        return list(csv.DictReader(file, delimiter="\t"))


def all_messages() -> list[bytes]:
    """Every corpus message as it goes on the wire (RFC 5118 in its CRLF wire form)."""
    files = sorted(CORPUS.glob("*.dat")) + sorted((CORPUS / "rfc5118" / "wire").glob("*.dat"))
    return [path.read_bytes() for path in files]
