"""Production settings plus one extra route, so the benchmark compares the poll with a bare view.

The environment decides everything else exactly as for `controlplane.settings`; only the URL
configuration changes (`benchmarks.bench_urls`), so both are served by the same server.
"""

from controlplane.settings import *  # noqa: F403

ROOT_URLCONF = "benchmarks.bench_urls"
