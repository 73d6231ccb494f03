from __future__ import annotations

from pathlib import Path

import pytest

from ckptd.convert_cli import build_request, parse_size
from ckptd.errors import ConfigError


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("5GB", 5 * 1000**3),
        ("500MB", 500 * 1000**2),
        ("2GiB", 2 * 1024**3),
        ("1.5 GB", 1_500_000_000),
        ("4096", 4096),
        ("512mib", 512 * 1024**2),
    ],
)
def test_sizes(text: str, expected: int) -> None:
    assert parse_size(text) == expected


@pytest.mark.parametrize("text", ["", "GB", "5 parsecs", "-1GB"])
def test_bad_sizes_name_the_option(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^--memory-budget: cannot read"):
        parse_size(text, "--memory-budget")


def request(**changes: object) -> dict[str, object]:
    values: dict[str, object] = {
        "src": Path("/s"),
        "out": Path("/o"),
        "base_model": None,
        "dtype": None,
        "lora": "merge",
        "lora_config": None,
        "max_shard_size": "5GB",
        "threads": 2,
        "force": False,
    }
    return {**values, **changes}


def test_request_carries_every_option() -> None:
    built = build_request(**request(dtype="bf16", lora="adapter", threads=0, memory_budget="256MiB"))  # type: ignore[arg-type]
    assert (built.dtype, built.lora, built.threads, built.memory_budget_bytes) == (
        "bf16",
        "adapter",
        1,
        256 * 1024**2,
    )


@pytest.mark.parametrize(("field", "value"), [("dtype", "int4"), ("lora", "both")])
def test_bad_choices_name_the_flag(field: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"^--{field}: "):
        build_request(**request(**{field: value}))  # type: ignore[arg-type]
