"""Cohort hashing: published vectors, the byte-level contract, spread and salt independence."""

import hashlib
import json
import os
import random
import struct
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from rollout import hashing
from rollout.hashing import BUCKETS, bucket, new_salt

REPO_ROOT = Path(__file__).resolve().parents[3]
VECTORS_PATH = REPO_ROOT / "docs" / "hashing" / "bucket-vectors.json"
README_PATH = REPO_ROOT / "docs" / "hashing" / "README.md"

# A fixed seed: the statistical tests are reproducible, each gives the same verdict every run.
SEED = 20_260_801
SIGNIFICANCE = 0.001
UNIFORMITY_DEVICES = 1_000_000
INDEPENDENCE_DEVICES = 200_000

# The .hypothesis example database is not wanted for pure, fast properties.
PROPERTY = settings(database=None, max_examples=300)


def load_vectors() -> list[dict]:
    return json.loads(VECTORS_PATH.read_text(encoding="utf-8"))


def idfv_like_ids(count: int, seed: int) -> list[str]:
    """Return `count` uppercase UUID strings (the IDFV format) from a seeded generator."""
    hexes = random.Random(seed).randbytes(16 * count).hex().upper()
    return [
        f"{h[0:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:32]}"
        for h in (hexes[i : i + 32] for i in range(0, 32 * count, 32))
    ]


@pytest.fixture(scope="module")
def device_ids() -> list[str]:
    return idfv_like_ids(UNIFORMITY_DEVICES, SEED)


def test_bucket__published_vectors__match_every_case():
    # Given the published vectors
    vectors = load_vectors()

    # When every case is hashed again
    mismatches = [
        (case["salt"], case["device_id"], case["bucket"], bucket(case["salt"], case["device_id"]))
        for case in vectors
        if bucket(case["salt"], case["device_id"]) != case["bucket"]
    ]

    # Then no device has moved
    assert mismatches == []


def test_bucket_vectors__file__covers_the_documented_edge_cases():
    vectors = load_vectors()
    salts = [case["salt"] for case in vectors]
    ids = [case["device_id"] for case in vectors]

    assert len(vectors) >= 64
    assert all(set(case) == {"salt", "device_id", "bucket"} for case in vectors)
    assert len({(case["salt"], case["device_id"]) for case in vectors}) == len(vectors)
    assert all(
        isinstance(case["bucket"], int) and 0 <= case["bucket"] < BUCKETS for case in vectors
    )
    assert "" in salts
    assert "" in ids
    assert any(":" in device_id for device_id in ids)
    assert any(len(device_id) == 128 for device_id in ids)
    assert "\u00e9" in ids and "e\u0301" in ids  # NFC and NFD spellings of é
    assert any(any(ord(char) > 0xFFFF for char in device_id) for device_id in ids)  # emoji
    assert any(any("\u4e00" <= char <= "\u9fff" for char in device_id) for device_id in ids)
    idfvs = [device_id for device_id in ids if _is_uppercase_uuid(device_id)]
    assert len(idfvs) >= 8
    assert any(device_id.lower() in ids for device_id in idfvs)
    assert {case["bucket"] for case in vectors} >= {0, BUCKETS - 1}


def _is_uppercase_uuid(text: str) -> bool:
    try:
        return str(uuid.UUID(text)).upper() == text
    except ValueError:
        return False


def test_bucket__readme_worked_example__matches_every_step():
    # Given the worked example in docs/hashing/README.md
    salt = "3f9c2a7be41d08c5a6f7e2d91b0c4e58"
    device_id = "E621E1F8-C36C-495A-93FC-0C247A3E6E5F"
    readme = README_PATH.read_text(encoding="utf-8")

    # When each step is computed
    message = f"{salt}:{device_id}".encode()
    digest = hashlib.sha256(message)
    first_eight = digest.digest()[:8]
    number = int.from_bytes(first_eight, "big")

    # Then each step is the one the README shows, and so is the bucket
    assert len(message) == 69
    assert digest.hexdigest() == "882ee4ebd7bd40425dd0ab1c17223ffcfc8e4b6fbda44abcacec218f0e9d5ae5"
    assert first_eight.hex(" ") == "88 2e e4 eb d7 bd 40 42"
    assert number == 9_813_032_339_674_841_154
    assert bucket(salt, device_id) == 1154
    for shown in (digest.hexdigest(), "88 2e e4 eb d7 bd 40 42", "9 813 032 339 674 841 154"):
        assert shown in readme
    assert "**1154**" in readme


def test_bucket__signed_read_of_worked_example__would_give_another_bucket():
    # Given the worked example, whose first byte has the top bit set
    digest = hashlib.sha256(
        b"3f9c2a7be41d08c5a6f7e2d91b0c4e58:E621E1F8-C36C-495A-93FC-0C247A3E6E5F"
    ).digest()

    # When the 8 bytes are read as a signed integer, as a careless SDK would
    (signed,) = struct.unpack(">q", digest[:8])

    # Then the result differs from the contract's bucket, so the vectors catch the mistake
    assert signed == -8_633_711_734_034_710_462
    assert signed % BUCKETS == 9538
    assert -(-signed % BUCKETS) == -462  # Java's truncating %
    assert (
        bucket("3f9c2a7be41d08c5a6f7e2d91b0c4e58", "E621E1F8-C36C-495A-93FC-0C247A3E6E5F") == 1154
    )


def test_hashing_docstring__modulo_bias__states_the_true_remainder():
    assert 2**64 % BUCKETS == 1616
    assert "2^64 mod 10000 = 1616" in hashing.__doc__
    assert BUCKETS == 10_000


@PROPERTY
@given(salt=st.text(), device_id=st.text())
def test_bucket__any_strings__is_an_int_in_range(salt, device_id):
    result = bucket(salt, device_id)

    assert type(result) is int
    assert 0 <= result < BUCKETS


@PROPERTY
@given(salt=st.text(), device_id=st.text())
def test_bucket__any_strings__equals_the_byte_level_definition(salt, device_id):
    # Given the contract restated with struct instead of int.from_bytes
    digest = hashlib.sha256(salt.encode("utf-8") + b":" + device_id.encode("utf-8")).digest()
    (unsigned,) = struct.unpack(">Q", digest[:8])

    assert bucket(salt, device_id) == unsigned % 10_000


@PROPERTY
@given(salt=st.text(), device_id=st.text())
def test_bucket__same_input_twice__returns_the_same_bucket(salt, device_id):
    assert bucket(salt, device_id) == bucket(salt, device_id)


def test_bucket__fresh_interpreter_with_other_hash_seeds__returns_the_same_buckets():
    # Given buckets computed in this process
    cases = [("s", "device-1"), ("", "\u00e9"), ("3f9c", "E621E1F8-C36C-495A-93FC-0C247A3E6E5F")]
    expected = [bucket(salt, device_id) for salt, device_id in cases]
    script = (
        "import json, sys; from rollout.hashing import bucket; "
        f"print(json.dumps([bucket(s, d) for s, d in {cases!r}]))"
    )

    # When other interpreters with other str-hash seeds compute them
    results = []
    for hash_seed in ("0", "12345"):
        completed = subprocess.run(
            [sys.executable, "-c", script],
            cwd=REPO_ROOT,
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
        )
        results.append(json.loads(completed.stdout))

    # Then nothing depends on Python's per-process hash()
    assert results == [expected, expected]


@pytest.mark.parametrize(
    ("salt", "device_id", "message"),
    [
        (b"salt", "device", "salt must be a str, not bytes."),
        ("salt", b"device", "device_id must be a str, not bytes."),
        ("salt", None, "device_id must be a str, not NoneType."),
        (None, "device", "salt must be a str, not NoneType."),
        ("salt", 42, "device_id must be a str, not int."),
        ("salt", uuid.UUID(int=0), "device_id must be a str, not UUID."),
    ],
)
def test_bucket__non_str_input__raises_type_error(salt, device_id, message):
    with pytest.raises(TypeError) as excinfo:
        bucket(salt, device_id)

    assert str(excinfo.value) == message


def test_bucket__one_million_random_ids__spread_uniformly_over_all_buckets(device_ids):
    # Given a million IDFV-like ids under one salt
    buckets = np.fromiter((bucket("uniformity", device_id) for device_id in device_ids), int)

    # When they are counted per bucket
    counts = np.bincount(buckets, minlength=BUCKETS)

    # Then every bucket is used and a chi-square test does not reject uniformity at p = 0.001
    assert counts.size == BUCKETS
    assert counts.sum() == UNIFORMITY_DEVICES
    assert counts.min() > 0
    result = stats.chisquare(counts)
    assert result.pvalue > SIGNIFICANCE, result


def test_bucket__sequential_ids__spread_uniformly():
    # Given structured ids that differ in one trailing digit, the hard case for a weak hash
    buckets = np.fromiter((bucket("sequential", f"device-{n}") for n in range(200_000)), int)

    # When they are counted per 100-bucket band (a whole percent)
    counts = np.bincount(buckets // 100, minlength=100)

    # Then a chi-square test does not reject uniformity at p = 0.001
    result = stats.chisquare(counts)
    assert result.pvalue > SIGNIFICANCE, result


def test_bucket__same_devices_under_two_salts__are_uncorrelated(device_ids):
    # Given the same devices under two salts that differ in one character
    sample = device_ids[:INDEPENDENCE_DEVICES]
    first = np.fromiter((bucket("rollout-1", device_id) for device_id in sample), int)
    second = np.fromiter((bucket("rollout-2", device_id) for device_id in sample), int)

    # When their buckets are compared
    pearson = stats.pearsonr(first, second)
    spearman = stats.spearmanr(first, second)
    contingency = np.zeros((10, 10), dtype=int)
    np.add.at(contingency, (first // 1000, second // 1000), 1)
    independence = stats.chi2_contingency(contingency)

    # Then the correlations are near zero and deciles look independent at p = 0.001
    assert abs(pearson.statistic) < 0.01
    assert abs(spearman.statistic) < 0.01
    assert pearson.pvalue > SIGNIFICANCE
    assert spearman.pvalue > SIGNIFICANCE
    assert contingency.sum() == INDEPENDENCE_DEVICES
    assert independence.pvalue > SIGNIFICANCE, independence
    # and a device keeps its bucket across salts no more often than chance (1 in 10 000)
    assert np.count_nonzero(first == second) < 3 * INDEPENDENCE_DEVICES / BUCKETS


def test_bucket__challenger_at_ten_percent_in_two_rollouts__overlap_is_the_product():
    # Given two rollouts with their own salts, each giving its challenger buckets [0, 1000)
    sample = idfv_like_ids(100_000, SEED + 1)
    in_first = np.fromiter((bucket("flow-a", device_id) < 1000 for device_id in sample), bool)
    in_second = np.fromiter((bucket("flow-b", device_id) < 1000 for device_id in sample), bool)

    # When the devices in both challengers are counted
    both = np.count_nonzero(in_first & in_second) / len(sample)

    # Then about 1 % of devices are in both, as for independent cohorts (not 10 %)
    standard_error = (0.01 * 0.99 / len(sample)) ** 0.5
    assert abs(both - 0.01) < 4 * standard_error


def test_new_salt__called__returns_32_lowercase_hex_characters():
    salt = new_salt()

    assert len(salt) == 32
    assert set(salt) <= set("0123456789abcdef")
    assert ":" not in salt
    assert bytes.fromhex(salt).hex() == salt


def test_new_salt__called_many_times__never_repeats():
    salts = {new_salt() for _ in range(1000)}

    assert len(salts) == 1000
