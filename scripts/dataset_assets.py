"""The datasets ``project.yml`` declares in its ``assets:`` section, checked offline against a
folder: which files are there with the declared checksum, which are missing, which differ, and
which files of the folder no asset declares.

    python scripts/dataset_assets.py project.yml                       # assets/full, what `spacy project assets` wrote
    python scripts/dataset_assets.py project.yml --against ../shared/datasets

Every asset is one file from a public GitHub repository at a pinned commit (a raw URL), with
the md5 that ``spacy project assets`` checks after downloading (weasel's checksum of a file).
Exits 1 when a present file differs from its checksum or the declarations are malformed.
"""
import argparse
import re
import sys
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Dict, List

import srsly
from wasabi import msg
from weasel.util import get_checksum

FULL = PurePosixPath("assets/full")  # where the assets go: the first of the presets' [corpus] data_dirs
PINNED_URL = re.compile(r"https://raw\.githubusercontent\.com/(?P<repo>[\w.-]+/[\w.-]+)/(?P<commit>[0-9a-f]{40})/"
                        r"(?P<path>\S+)")
MD5 = re.compile(r"[0-9a-f]{32}")
FETCH = "python -m spacy project assets"


@dataclass(frozen=True)
class Asset:
    name: str  # the file's path under assets/full (and under ../shared/datasets)
    url: str
    checksum: str
    description: str

    @property
    def source(self) -> Dict[str, str]:
        """The repository, commit and path the URL pins."""
        return PINNED_URL.fullmatch(self.url).groupdict()


def declared_assets(project: Path) -> List[Asset]:
    """The ``assets:`` of ``project`` (a project.yml), each checked: a file under assets/full, a
    raw GitHub URL pinned to a commit, an md5. A malformed entry raises ValueError naming it."""
    assets, seen = [], set()
    for index, entry in enumerate(srsly.read_yaml(project).get("assets") or []):
        dest = PurePosixPath(str(entry.get("dest", "")))
        where = f"{project}: asset {index + 1} ({entry.get('dest', 'no dest')})"
        if dest.parent == dest or FULL not in dest.parents or ".." in dest.parts:
            raise ValueError(f"{where}: dest must be a file under {FULL}/")
        if not PINNED_URL.fullmatch(str(entry.get("url", ""))):
            raise ValueError(f"{where}: url must be https://raw.githubusercontent.com/OWNER/REPO/COMMIT/PATH with a "
                             f"40-hex commit, so the data cannot change under the checksum")
        if not MD5.fullmatch(str(entry.get("checksum", ""))):
            raise ValueError(f"{where}: checksum must be the file's md5 (32 hex digits)")
        name = str(dest.relative_to(FULL))
        if name in seen:
            raise ValueError(f"{where}: declared twice")
        seen.add(name)
        assets.append(Asset(name, entry["url"], entry["checksum"], str(entry.get("description", ""))))
    return assets


def asset_status(asset: Asset, folder: Path) -> str:
    """"ok", "missing" or "differs": the asset's file in ``folder`` against its checksum."""
    path = folder / asset.name
    if not path.is_file():
        return "missing"
    return "ok" if get_checksum(path) == asset.checksum else "differs"  # what `spacy project assets` checks


def undeclared_files(assets: List[Asset], folder: Path) -> List[str]:
    """Files of ``folder`` no asset declares (its README aside)."""
    names = {asset.name for asset in assets}
    return sorted(name for name in (path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file())
                  if name not in names and name != "README.md")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("project", type=Path, help="the project.yml")
    parser.add_argument("--against", type=Path, default=None, help="folder to check (default: assets/full beside it)")
    args = parser.parse_args(argv)
    try:
        assets = declared_assets(args.project)
    except (OSError, ValueError) as err:
        msg.fail("The declared datasets could not be read", str(err))
        return 1
    folder = args.against or args.project.parent / FULL
    statuses = [asset_status(asset, folder) for asset in assets]
    rows = [(asset.name, f"{asset.source['repo']}@{asset.source['commit'][:7]}", status)
            for asset, status in zip(assets, statuses)]
    extra = undeclared_files(assets, folder) if folder.is_dir() else []
    msg.table(rows + [(name, "-", "not declared") for name in extra], header=("file", "source", "status"),
              divider=True)
    counts = {status: statuses.count(status) for status in ("ok", "missing", "differs")}
    msg.info(f"{folder}: {counts['ok']} of {len(assets)} declared files match their checksum, {counts['missing']} "
             f"missing, {counts['differs']} differ; {len(extra)} files not declared")
    if counts["missing"] and args.against is None:
        msg.text(f"`{FETCH}` fetches the missing ones into {FULL}")
    return 1 if counts["differs"] else 0


if __name__ == "__main__":
    sys.exit(main())
