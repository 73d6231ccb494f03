from __future__ import annotations

from pathlib import Path

import pytest

from ckptd.config import load_config
from ckptd.errors import ConfigError

EXAMPLE = Path(__file__).resolve().parents[2] / "deploy" / "ckptd.toml"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "ckptd.toml"
    path.write_text(text)
    return path


def test_defaults_work_without_a_file(tmp_path: Path) -> None:
    config = load_config(None, environ={"XDG_STATE_HOME": str(tmp_path), "XDG_CONFIG_HOME": str(tmp_path)})
    assert config.database.url == f"sqlite:///{tmp_path}/ckptd/ckptd.db"
    assert config.watch == [] and config.workers.count == 2 and config.scan.interval == 30.0
    assert config.source is None


def test_the_example_config_loads() -> None:
    config = load_config(EXAMPLE, environ={})
    assert config.watch[0].root == Path("/data/runs")
    assert config.watch[0].output_root == Path("/data/hf")
    assert config.watch[0].dtype == "bf16"


def test_environment_overrides_file_and_flags_override_environment(tmp_path: Path) -> None:
    path = write(tmp_path, '[workers]\ncount = 3\n[[watch]]\nroot = "/r"\ndtype = "bf16"\n')
    env = {
        "CKPTD_WORKERS_COUNT": "5",
        "CKPTD_WATCH_0_DTYPE": "fp16",
        "CKPTD_WATCH_1_ROOT": "/other",
        "CKPTD_SCAN_MODE": "poll",
    }
    config = load_config(path, environ=env, overrides={"workers": {"count": 7}})
    assert config.workers.count == 7
    assert [w.dtype for w in config.watch] == ["fp16", None]
    assert config.watch[1].root == Path("/other")
    assert config.scan.mode == "poll"


def test_several_watch_roots_each_with_their_own_settings(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[[watch]]
root = "/a"
base_model = "/m/a"
lora = "adapter"
on_done = ["python", "eval.py", "{output}"]
[[watch]]
root = "/b"
output = "/out/b"
dtype = "fp32"
""",
    )
    a, b = load_config(path, environ={}).watch
    assert (a.base_model, a.lora, a.on_done, a.output_root) == (
        Path("/m/a"),
        "adapter",
        ["python", "eval.py", "{output}"],
        Path("/a-hf"),
    )
    assert (b.dtype, b.output_root) == ("fp32", Path("/out/b"))


@pytest.mark.parametrize(
    ("text", "env", "field"),
    [
        ("[workers]\ncount = 'many'\n", {}, "workers.count"),
        ("[workers]\ncuont = 2\n", {}, "workers.cuont"),
        ('[[watch]]\nroot = "/r"\ndtype = "int4"\n', {}, "watch[0].dtype"),
        ('[[watch]]\noutput = "/o"\n', {}, "watch[0].root"),
        ('[[watch]]\nroot = "/r"\noutput = "/r/hf"\n', {}, "watch[0].output"),
        ('[[watch]]\nroot = "/r"\noutput = "/x/checkpoints/hf"\n', {}, "watch[0].output"),
        ("[scan]\nmode = 'inotify'\n", {}, "scan.mode"),
        ("[bogus]\nx = 1\n", {}, "bogus"),
        (
            "",
            {"CKPTD_WORKERS_LEASE_SECONDS": "10", "CKPTD_WORKERS_HEARTBEAT_SECONDS": "8"},
            "workers.heartbeat_seconds",
        ),
        ("", {"CKPTD_WATCH_X_ROOT": "/r"}, "CKPTD_WATCH_X_ROOT"),
    ],
)
def test_validation_errors_name_the_field(tmp_path: Path, text: str, env: dict[str, str], field: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_config(write(tmp_path, text), environ=env)
    assert str(info.value).startswith(field), str(info.value)
    assert "\n" not in str(info.value)


def test_invalid_toml_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[workers\ncount = 2")
    with pytest.raises(ConfigError, match=str(path)):
        load_config(path, environ={})


def test_config_file_found_through_environment(tmp_path: Path) -> None:
    path = write(tmp_path, "[workers]\ncount = 9\n")
    assert load_config(None, environ={"CKPTD_CONFIG": str(path)}).workers.count == 9
