"""Every source `cxr download` knows, one entry each, holding every property of the source.

The CLI's help, the check that each option given is one the source reads, the allowed tasks and
the download command suggested for a missing dataset all come from here; cxr.data.sources finds
each entry's converter and files by the names given below. Adding a source is one converter and
one entry. This module imports nothing heavy: the CLI reads it before scikit-learn or TensorFlow.
"""

from __future__ import annotations

from dataclasses import dataclass

# the 14 findings of NIH ChestX-ray14's Data_Entry_2017 "Finding Labels" (besides "No Finding")
NIH_FINDINGS = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Effusion",
    "Emphysema",
    "Fibrosis",
    "Hernia",
    "Infiltration",
    "Mass",
    "Nodule",
    "Pleural_Thickening",
    "Pneumonia",
    "Pneumothorax",
)
# DownloadOptions fields every source reads; the others are read only by the sources naming them
COMMON_OPTIONS = ("dest", "name", "size", "folds", "seed", "overwrite", "show_progress")
DOWNLOADED = ("from_dir", "mirror")  # what every downloaded source reads besides
# how each option is spelled on the command line, where not --field-name
FLAGS = {"from_dir": "--from", "csv_root": "--root"}


@dataclass(frozen=True, kw_only=True)
class SourceSpec:
    name: str  # what `cxr download NAME` takes
    summary: str  # one line, for --help
    items: str  # its converter in cxr.data.sources: (root, options) -> images with labels
    default_size: int | None  # stored size when --size is not given; None: the files' own
    default_task: str | None = None
    tasks: tuple[str, ...] = ()  # what --task takes; () none
    files: str | None = None  # the RemoteFile tuple in cxr.data.sources it downloads
    credentials: str | None = None  # "kaggle": Kaggle's API needs the user's key
    options: tuple[str, ...] = ()  # DownloadOptions fields it reads beyond the common ones

    @property
    def needs_download(self) -> bool:
        return self.files is not None

    def reads(self) -> tuple[str, ...]:
        """Every DownloadOptions field this source reads."""
        task = ("task",) if self.tasks else ()
        fetched = DOWNLOADED if self.needs_download else ()
        return COMMON_OPTIONS + task + fetched + self.options


def flag(field: str) -> str:
    """The command-line spelling of a DownloadOptions field."""
    return FLAGS.get(field, "--" + field.replace("_", "-"))


SOURCE_SPECS = (
    SourceSpec(
        name="synthetic",
        summary="CXR-like phantoms with planted findings and boxes, made locally in seconds",
        items="synthetic_items",
        default_size=256,
        default_task="pneumonia",
        tasks=("pneumonia", "cardiomegaly"),
        options=("n", "positive_fraction", "bias"),
    ),
    SourceSpec(
        name="nih-cxr14",
        summary=(
            "NIH ChestX-ray14: 112,120 PNGs, 14 findings, patient ids, 984 boxes (NIH public "
            "links; CSVs from the NIH Box folder)"
        ),
        items="nih_items",
        default_size=512,
        default_task="cardiomegaly",
        tasks=("all", *(finding.lower() for finding in NIH_FINDINGS)),
        files="NIH_FILES",
        options=("parts",),
    ),
    SourceSpec(
        name="rsna-pneumonia",
        summary=(
            "RSNA Pneumonia Detection Challenge: DICOMs with opacity boxes (Kaggle credentials; "
            "accept the competition rules first)"
        ),
        items="rsna_items",
        default_size=512,
        default_task="pneumonia",
        tasks=("pneumonia",),
        files="RSNA_FILES",
        credentials="kaggle",
    ),
    SourceSpec(
        name="covid-radiography",
        summary=(
            "COVID-19 Radiography Database: COVID / normal / viral pneumonia PNGs (Kaggle "
            "credentials)"
        ),
        items="covid_items",
        default_size=299,
        files="COVID_FILES",
        credentials="kaggle",
        options=("classes",),
    ),
    SourceSpec(
        name="folder",
        summary="your own images: --from DIR with one sub-folder per class, or --csv FILE of "
        "path,label[,patient_id,boxes,lungs,lung_mask,...] (--root: where its paths start)",
        items="folder_items",
        default_size=None,
        options=("from_dir", "csv", "csv_root", "inject_marker"),
    ),
)
SOURCES_BY_NAME = {spec.name: spec for spec in SOURCE_SPECS}
SOURCE_NAMES = tuple(SOURCES_BY_NAME)
