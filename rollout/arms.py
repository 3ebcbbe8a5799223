"""The names of a rollout's arms (no Django): the baseline, and what a challenger may be called.

Every layer names arms with these: allocation and assignment, the exposure ledger, the outcome
rows, the analysis and the judge, the admin and the demo.
"""

import re

# The devices outside every challenger's segment, who get the flow's baseline (or the bundled
# model). No challenger may take this name.
BASELINE = "baseline"

# A challenger's name: lowercase letters, digits, '-' and '_', up to 64 characters.
_ARM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")


def challenger_name(position: int) -> str:
    """The name a challenger gets when none is given: its position, from 1 ("challenger-1")."""
    return f"challenger-{position}"


def is_challenger_name(name: object) -> bool:
    """Whether `name` may name a challenger arm: well-formed, and not the baseline's."""
    return isinstance(name, str) and bool(_ARM_NAME.match(name)) and name != BASELINE
