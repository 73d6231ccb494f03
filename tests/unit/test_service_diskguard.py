"""The disk guard's arithmetic and the free-space probe."""

from __future__ import annotations

import shutil
from pathlib import Path

from ckptd.service.diskguard import describe, free_bytes, shortage


def test_enough_space_is_no_shortage() -> None:
    assert shortage(needed=100, free=1_000, reserve=500) == 0
    assert shortage(needed=500, free=1_000, reserve=500) == 0  # exactly the reserve left


def test_shortage_is_what_is_missing_to_keep_the_reserve() -> None:
    assert shortage(needed=501, free=1_000, reserve=500) == 1
    assert shortage(needed=100, free=1_000, reserve=2_000) == 1_100  # reserve alone exceeds free
    assert shortage(needed=0, free=0, reserve=0) == 0


def test_free_bytes_of_a_not_yet_created_output_is_its_filesystem(tmp_path: Path) -> None:
    future = tmp_path / "hf" / "exp" / "global_step_10"
    assert not future.exists()
    assert abs(free_bytes(future) - shutil.disk_usage(tmp_path).free) < 64 * 1024**2


def test_describe_names_the_numbers_and_the_knob() -> None:
    text = describe(Path("/data/hf/exp/global_step_1"), 2 * 10**9, 5 * 10**9, 10 * 10**9)
    assert text == (
        "/data/hf/exp: waiting for disk space: needs 2.00 GB + 10.00 GB reserve, 5.00 GB free; "
        "free space or lower disk.reserve_bytes"
    )
    assert "\n" not in text
