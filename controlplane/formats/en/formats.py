"""English formats: Django's, except that every time says its zone ("1 Dec 2026, 14:05 UTC").

The database keeps UTC and the admin shows times in TIME_ZONE; without the zone a reader in
another one cannot tell which moment a rollout advanced. `T` is the zone's abbreviation.
"""

DATETIME_FORMAT = "j M Y, H:i T"
SHORT_DATETIME_FORMAT = "Y-m-d H:i T"
