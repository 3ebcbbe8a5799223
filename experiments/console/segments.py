"""
The rollout page's segments (CONSOLE.md, page 8): devices exposed per arm by SDK version, and
a model-health row, model errors by SDK version per arm.

Exploratory only: the judge decides on all devices together, and never reads these slices
(the more slices one looks at, the more of them differ by chance). The one exception the
judge has, the sample-ratio check per SDK version, is shown as the analysis stored it.
"""

from dataclasses import dataclass

from registry.sdk_versions import InvalidSdkVersion, parse_sdk_version
from rollout.arms import BASELINE
from rollout.models import Rollout
from rollout.shares import ALL_DEVICES, percent_text

from ..models import Analysis
from ..selectors import analysis_latest, exposures_by_sdk

SDK_SLICE_PREFIX = "SDK "  # how the analysis names an SDK version's slice of the SRM check


@dataclass(frozen=True)
class SegmentCell:
    arm: str
    exposed: int
    exposed_share: str  # of this SDK version's exposed devices
    comparable: int
    errored: int
    error_rate: str  # of the comparable devices


@dataclass(frozen=True)
class SegmentRow:
    sdk_version: str
    exposed: int
    cells: tuple[SegmentCell, ...]  # in the order of `Segments.arms`
    srm_flag: str | None  # the analysis' sample-ratio finding for this slice, if any


@dataclass(frozen=True)
class Segments:
    arms: tuple[str, ...]  # the baseline, then the challengers
    set_shares: dict[str, str]  # arm → its set share, for the expected split
    rows: tuple[SegmentRow, ...]  # newest SDK version first

    @property
    def empty(self) -> bool:
        return not self.rows

    @property
    def expected_split(self) -> str:
        return ", ".join(f"{arm} {self.set_shares[arm]}" for arm in self.arms)


def _version_key(text: str) -> tuple:
    try:
        return (1, parse_sdk_version(text))
    except InvalidSdkVersion:
        return (0, text)


def _ratio(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "—"


def _srm_flags(analysis: Analysis | None) -> dict[str, str]:
    if analysis is None:
        return {}
    flags = {}
    for finding in analysis.body.get("srm") or []:
        name = finding.get("slice", "")
        if name.startswith(SDK_SLICE_PREFIX):
            flags[name[len(SDK_SLICE_PREFIX) :]] = (
                f"sample ratio mismatch (p = {finding.get('p_value', 0):.2g})"
            )
    return flags


def rollout_segments(rollout: Rollout) -> Segments:
    """The segments of a rollout's page, with the SRM findings of its latest analysis."""
    challengers = list(rollout.arms.all())
    arms = (BASELINE, *(arm.name for arm in challengers))
    held = sum(arm.share_now for arm in challengers)
    set_shares = {
        BASELINE: percent_text(ALL_DEVICES - held),
        **{arm.name: percent_text(arm.share_now) for arm in challengers},
    }
    counts = exposures_by_sdk(rollout=rollout)
    flags = _srm_flags(analysis_latest(rollout=rollout))
    rows = []
    for sdk_version in sorted(counts, key=_version_key, reverse=True):
        by_arm = counts[sdk_version]
        total = sum(c["exposed"] for c in by_arm.values())
        cells = []
        for arm in arms:
            c = by_arm.get(arm, {"exposed": 0, "comparable": 0, "errored": 0})
            cells.append(
                SegmentCell(
                    arm=arm,
                    exposed=c["exposed"],
                    exposed_share=_ratio(c["exposed"], total),
                    comparable=c["comparable"],
                    errored=c["errored"],
                    error_rate=_ratio(c["errored"], c["comparable"]),
                )
            )
        rows.append(SegmentRow(sdk_version, total, tuple(cells), flags.get(sdk_version)))
    return Segments(arms=arms, set_shares=set_shares, rows=tuple(rows))
