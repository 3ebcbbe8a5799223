"""
What growing a challenger's share costs in downloads, estimated before anyone confirms it
(pure: no Django). CONSOLE.md, page 4: "the download cost of every stage before the PM starts it".

The fleet is not known, only the devices that polled during the rollout, so the estimate says
how it was made:

- from the challenger's own exposed devices, when it has some: the devices of its segment that
  polled so far, scaled by the added share over the current share. These are the devices that
  can run the model (its SDK range), the ones that will download it;
- else from every device exposed in the rollout (any arm), times the added share;
- else there is nothing to estimate from, and it says so.

Bytes are devices times the model file's size; egress is billed per GB of 10⁹ bytes.
"""

from dataclasses import dataclass

from .shares import ALL_DEVICES, percent_text

# Price presets shown beside the configured price (USD per GB of egress).
EGRESS_PRESETS: tuple[tuple[str, float], ...] = (("S3", 0.09), ("R2", 0.0))
BYTES_PER_GB = 10**9


@dataclass(frozen=True)
class DownloadEstimate:
    devices: int | None  # None: no device to estimate from
    how: str  # one sentence: from what, and how
    model_bytes: int

    @property
    def total_bytes(self) -> int | None:
        return None if self.devices is None else self.devices * self.model_bytes

    def cost(self, price_per_gb: float) -> float | None:
        total = self.total_bytes
        return None if total is None else total / BYTES_PER_GB * price_per_gb


def downloads_estimate(
    *,
    arm: str,
    share_now: int,
    share_next: int,
    arm_exposed: int,
    all_exposed: int,
    model_bytes: int,
) -> DownloadEstimate:
    """Devices that will download `arm`'s model when its share goes from `share_now` to
    `share_next` (basis points), and how that was estimated."""
    added = max(0, share_next - share_now)
    change = f"{percent_text(share_now)} \u2192 {percent_text(share_next)}"
    if added == 0:
        return DownloadEstimate(0, f"{arm}'s share does not grow ({change}).", model_bytes)
    if share_now > 0 and arm_exposed > 0:
        devices = round(arm_exposed * added / share_now)
        return DownloadEstimate(
            devices,
            f"{arm_exposed:,} devices exposed to {arm} at {percent_text(share_now)} "
            f"\u00d7 {percent_text(added)} added / {percent_text(share_now)}.",
            model_bytes,
        )
    if all_exposed > 0:
        devices = round(all_exposed * added / ALL_DEVICES)
        return DownloadEstimate(
            devices,
            f"{all_exposed:,} devices exposed in this rollout \u00d7 {percent_text(added)} "
            f"added ({change}).",
            model_bytes,
        )
    return DownloadEstimate(
        None, "No device has polled in this rollout yet: nothing to estimate from.", model_bytes
    )


def bytes_text(count: int | None) -> str:
    """A byte count as people read it, in powers of 1000 (as egress is billed)."""
    if count is None:
        return "\u2014"
    if count < 1000:
        return f"{count:,} bytes"
    value, unit = count / 1000, "kB"
    for larger in ("MB", "GB", "TB"):
        if value < 1000:
            break
        value, unit = value / 1000, larger
    return f"{value:.1f} {unit}"


def money_text(amount: float | None) -> str:
    if amount is None:
        return "\u2014"
    if 0 < amount < 0.01:
        return "< $0.01"
    return f"${amount:,.2f}"
