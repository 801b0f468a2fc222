"""The sources of cxr.catalogs.sources made runnable: each entry's converter, files and credentials,
looked up by name; `download` fetches them and writes the standard layout through `write_dataset`.
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from cxr.catalogs.sources import SOURCE_SPECS, SourceSpec, flag
from cxr.data import converters
from cxr.data.dataset import Item, write_dataset
from cxr.data.download import (
    CorruptArchive,
    RemoteFile,
    extract_archive,
    fetch,
    is_archive_name,
    kaggle_credentials,
    mirror_url,
)
from cxr.data.marker import inject_markers
from cxr.data.synthetic import make_synthetic_items
from cxr.errors import ConfigError, DataError, shorten

log = logging.getLogger(__name__)

# The NIH Clinical Center's public links to the 12 image archives (about 42 GB in all).
# The NIH publishes no checksums for them here, so only completeness is checked.
NIH_ARCHIVE_IDS = (
    "vfk49d74nhbxq3nqjg0900w5nvkorp5c",
    "i28rlmbvmfjbl8p2n3ril0pptcmcu9d1",
    "f1t00wrtdk94satdfb9olcolqx20z2jp",
    "0aowwzs5lhjrceb3qp67ahp0rd1l1etg",
    "v5e3goj22zr6h8tzualxfsqlqaygfbsn",
    "asi7ikud9jwnkrnkj99jnpfkjdes7l6l",
    "jn1b4mw4n6lnh74ovmcjb8y48h8xj07n",
    "tvpxmn7qyrgl0w8wfh9kqfjskv6nmm1j",
    "upyy3ml7qdumlgk2rfcvlb9k6gvqq2pj",
    "l6nilvfa9cg3s28tqv1qc1olm3gnz54p",
    "hhq8fkdgvcari67vfhs7ppg2w6ni4jze",
    "ioqwiy20ihqwyr8pf4c24eazhh281pbu",
)
NIH_FILES = tuple(
    RemoteFile(f"https://nihcc.box.com/shared/static/{key}.gz", f"images_{i:03d}.tar.gz")
    for i, key in enumerate(NIH_ARCHIVE_IDS, 1)
)
KAGGLE_API = "https://www.kaggle.com/api/v1"
RSNA_FILES = (
    RemoteFile(
        f"{KAGGLE_API}/competitions/data/download-all/rsna-pneumonia-detection-challenge",
        "rsna-pneumonia-detection-challenge.zip",
    ),
)
COVID_FILES = (
    RemoteFile(
        f"{KAGGLE_API}/datasets/download/tawsifurrahman/covid19-radiography-database",
        "covid19-radiography-database.zip",
    ),
)


@dataclass
class DownloadOptions:
    """Everything `cxr download` can be told; each source reads the options it needs."""

    dest: Path = Path("data")
    name: str | None = None
    task: str | None = None
    size: int | None = None
    folds: int = 10
    seed: int = 0
    n: int = 400
    positive_fraction: float = 0.5
    bias: float | None = None
    from_dir: Path | None = None
    csv: Path | None = None
    csv_root: Path | None = None  # folder: what the CSV's paths are relative to (its own folder)
    mirror: str | None = None
    parts: list[int] | None = None
    classes: list[str] = field(default_factory=lambda: ["covid", "normal", "viral_pneumonia"])
    overwrite: bool = False
    show_progress: bool = True
    inject_marker: float | None = None  # folder: tag positives with P, negatives with 1 - P


@dataclass(frozen=True)
class Source:
    """A catalog entry with what it needs to run: its converter, files and credentials."""

    spec: SourceSpec
    items: Callable[[Path, DownloadOptions], Iterator[Item]]
    files: tuple[RemoteFile, ...] = ()
    credentials: Callable[[], tuple[str, str]] | None = None

    def dataset_name(self, options: DownloadOptions) -> str:
        if options.name:
            return options.name
        if self.spec.name == "folder":
            return (
                (options.csv.parent if options.csv else options.from_dir or Path("folder"))
                .resolve()
                .name
            )
        task = options.task  # download() has put the default in
        return f"{self.spec.name}-{task}" if task and task not in self.spec.name else self.spec.name


def synthetic_items(_: Path, o: DownloadOptions) -> Iterator[Item]:
    return make_synthetic_items(o.n, o.size or 256, o.task, o.positive_fraction, o.bias, o.seed)


def nih_items(root: Path, o: DownloadOptions) -> Iterator[Item]:
    return converters.convert_nih(root, o.task)


def rsna_items(root: Path, o: DownloadOptions) -> Iterator[Item]:
    return converters.convert_rsna(root, o.task)


def covid_items(root: Path, o: DownloadOptions) -> Iterator[Item]:
    return converters.convert_covid(root, o.classes)


def folder_items(root: Path, o: DownloadOptions) -> Iterator[Item]:
    return converters.convert_folder(root, o.csv, o.csv_root)


CREDENTIALS = {"kaggle": kaggle_credentials}
SOURCES: dict[str, Source] = {
    spec.name: Source(
        spec,
        globals()[spec.items],
        globals()[spec.files] if spec.files else (),
        CREDENTIALS[spec.credentials] if spec.credentials else None,
    )
    for spec in SOURCE_SPECS
}


def get_source(name: str) -> Source:
    """Look a source up, or fail with the valid names and the closest match."""
    if name in SOURCES:
        return SOURCES[name]
    close = [s for s in SOURCES if s.startswith(name.lower())] or difflib.get_close_matches(
        name, list(SOURCES), n=1
    )
    hint = f"did you mean {close[0]!r}? " if close else ""
    raise DataError(f"unknown dataset source {name!r}; {hint}known sources: {', '.join(SOURCES)}")


def check_options(spec: SourceSpec, options: DownloadOptions) -> None:
    """A ConfigError for an option this source would ignore, or a --task it does not have."""
    reads = spec.reads()
    defaults = DownloadOptions()
    for item in dataclasses.fields(DownloadOptions):
        given = getattr(options, item.name)
        if item.name not in reads and given != getattr(defaults, item.name):
            allowed = ", ".join(flag(f) for f in reads if f not in ("dest", "show_progress"))
            raise ConfigError(
                f"{flag(item.name)} is not used by the {spec.name} source; it reads: {allowed}"
            )
    if options.task is not None and options.task not in spec.tasks:  # a source with tasks
        raise ConfigError(f"--task {options.task!r}: {spec.name} has tasks {', '.join(spec.tasks)}")


def download(
    source_name: str,
    options: DownloadOptions,
    progress: Callable[[Iterable[Item]], Iterable[Item]] | None = None,
) -> Path:
    """Fetch (or make) a dataset and write it in the standard layout; returns its folder."""
    source = get_source(source_name)
    check_options(source.spec, options)
    if options.size is None:
        options.size = source.spec.default_size
    if options.task is None:
        options.task = source.spec.default_task
    root = options.from_dir or Path(".")
    if source_name == "folder" and options.from_dir is None and options.csv is None:
        raise DataError(
            "the folder source needs --from DIR (one sub-folder per class) or --csv FILE"
        )
    if options.csv_root is not None and options.csv is None:
        raise ConfigError("--root says where the paths of a --csv start; add --csv FILE")
    name = check_dataset_name(source.dataset_name(options))
    if (options.dest / name).exists() and not options.overwrite:
        raise DataError(
            f"dataset folder {options.dest / name} already exists; pass --overwrite to replace it"
        )
    if source.spec.needs_download and options.from_dir is None:
        root = fetch_source(source_name, source, options)
    multi_label = options.task == "all"
    items = source.items(root, options)
    if options.inject_marker is not None:
        items = inject_markers(items, options.inject_marker, options.seed)
    return write_dataset(
        items,
        options.dest,
        name,
        size=options.size,
        folds=options.folds,
        seed=options.seed,
        multi_label=multi_label,
        overwrite=options.overwrite,
        metadata={
            "source": source_name,
            "task": options.task,
            "inject_marker": options.inject_marker,
        },
        progress=progress or (lambda items: items),
    )


DATASET_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def check_dataset_name(name: str, option: str = "--name") -> str:
    """A dataset name is one plain folder name: never '.', '..', a path, or hidden (the overwrite
    deletes it)."""
    if not DATASET_NAME.fullmatch(name) or name in (".", ".."):
        raise ConfigError(
            f"{option} {shorten(repr(name), 100)}: a dataset name is one folder name of letters, "
            "digits, "
            "'.', '_' and '-', starting with a letter or digit (no '/', '..' or leading '.')"
        )
    return name


def fetch_source(source_name: str, source: Source, options: DownloadOptions) -> Path:
    """Download the source's files into `<dest>/_downloads/<source>/` and extract its archives
    there."""
    folder = options.dest / "_downloads" / source_name
    files = source.files
    if options.parts:
        bad = [p for p in options.parts if not 1 <= p <= len(files)]
        if bad:
            raise DataError(f"--parts {bad} out of range: {source_name} has parts 1..{len(files)}")
        files = tuple(files[p - 1] for p in options.parts)
    # credentials go to the publisher's own API over https, never to a mirror
    auth = source.credentials() if source.credentials and not options.mirror else None
    for remote in files:
        if options.mirror:
            remote = dataclasses.replace(remote, url=mirror_url(options.mirror, remote.filename))
        path = fetch(remote, folder, auth=auth, show_progress=options.show_progress)
        if is_archive_name(path.name):
            try:
                extract_archive(path, folder / "extracted" / path.name.split(".")[0])
            except CorruptArchive as exc:
                path.unlink(missing_ok=True)  # downloaded by us: fetching it again is the fix
                raise DataError(
                    f"{exc}; the file was removed, run again to download it anew"
                ) from None
    return folder
