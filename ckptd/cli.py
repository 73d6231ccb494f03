"""The ``ckptd`` command line: thin wrappers over the daemon, the queue and the conversion pipeline."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from ckptd.config import Config, load_config
from ckptd.errors import CkptdError

app = typer.Typer(add_completion=False, no_args_is_help=True, help="Checkpoint-conversion daemon.")
jobs_app = typer.Typer(no_args_is_help=True, help="Inspect and steer single jobs.")
db_app = typer.Typer(no_args_is_help=True, help="Database maintenance.")
app.add_typer(jobs_app, name="jobs")
app.add_typer(db_app, name="db")

ConfigOption = Annotated[Path | None, typer.Option("--config", "-c", help="TOML config file.")]
err = Console(stderr=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/] {message}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def _config(path: Path | None) -> Config:
    try:
        return load_config(path)
    except CkptdError as exc:
        raise _fail(str(exc), 2) from None


def _repository(config: Config) -> Any:
    from ckptd.queue.engine import make_engine
    from ckptd.queue.repository import JobRepository
    from ckptd.queue.schema import upgrade

    engine = make_engine(config.database.url)
    upgrade(engine)
    return JobRepository(engine)


@app.command()
def run(config: ConfigOption = None) -> None:
    """Run the daemon in the foreground until SIGTERM/SIGINT."""
    from ckptd.daemon import Daemon
    from ckptd.logging import configure_logging

    cfg = _config(config)
    configure_logging(cfg.log.level, cfg.log.format)
    try:
        code = Daemon(cfg).run()
    except CkptdError as exc:
        raise _fail(str(exc)) from None
    raise typer.Exit(code)


@app.command()
def status(
    config: ConfigOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    state: Annotated[list[str] | None, typer.Option("--state", help="Only these states.")] = None,
    experiment: Annotated[str | None, typer.Option("--experiment", help="Only this experiment.")] = None,
    limit: Annotated[int | None, typer.Option("--limit", help="At most this many jobs.")] = None,
) -> None:
    """What was converted, what is running, what failed and why."""
    from ckptd.cli_output import print_table, status_json

    repo = _repository(_config(config))
    jobs = repo.list_jobs(states=state or None, experiment=experiment, limit=limit)
    if as_json:
        sys.stdout.write(json.dumps(status_json(jobs), indent=2) + "\n")
        return
    print_table(jobs, repo.counts())


@app.command()
def convert(
    src: Annotated[Path, typer.Argument(help="global_step_N dir, its actor/ dir, dcp_checkpoint/ or a .pt")],
    out: Annotated[Path, typer.Option("--out", "-o", help="Output HF dir (must not exist).")],
    base_model: Annotated[Path | None, typer.Option(help="HF dir with config.json + tokenizer.")] = None,
    dtype: Annotated[str | None, typer.Option(help="keep|bf16|fp16|fp32 (default: base config).")] = None,
    lora: Annotated[str, typer.Option(help="merge|adapter")] = "merge",
    lora_config: Annotated[Path | None, typer.Option(help="adapter_config.json giving lora_alpha.")] = None,
    max_shard_size: Annotated[str, typer.Option(help="Output shard size, e.g. 5GB, 500MB.")] = "5GB",
    threads: Annotated[int, typer.Option(help="Shards converted in parallel.")] = 2,
    memory_budget: Annotated[
        str | None, typer.Option(help="Shard bytes in flight (Megatron), e.g. 512MiB.")
    ] = None,
    plan: Annotated[bool, typer.Option("--plan", help="Print what would be done; convert nothing.")] = False,
    force: Annotated[bool, typer.Option(help="Replace an existing output dir.")] = False,
) -> None:
    """Convert one checkpoint now (same code as the daemon's workers)."""
    from ckptd.convert_cli import build_request, run_convert

    try:
        request = build_request(
            src=src,
            out=out,
            base_model=base_model,
            dtype=dtype,
            lora=lora,
            lora_config=lora_config,
            max_shard_size=max_shard_size,
            threads=threads,
            force=force,
            memory_budget=memory_budget,
        )
        run_convert(request, plan=plan)
    except CkptdError as exc:
        raise _fail(str(exc)) from None


@app.command()
def demo(
    keep: Annotated[Path | None, typer.Option(help="Build the demo here and keep it.")] = None,
) -> None:
    """Make a small synthetic experiment, run the daemon on it until every job is done, show the result."""
    from ckptd.demo import run_demo

    raise typer.Exit(run_demo(keep))


@app.command()
def health(
    config: ConfigOption = None,
    max_age: Annotated[float, typer.Option(help="Seconds since the main loop's last tick.")] = 60.0,
) -> None:
    """Exit 0 when the DB is reachable, the watch roots are mounted and the main loop ticks."""
    from ckptd.service.health import check_health

    problems = check_health(_config(config), max_age)
    for problem in problems:
        err.print(f"unhealthy: {problem}", highlight=False, soft_wrap=True)
    if problems:
        raise typer.Exit(1)
    Console().print("healthy")


@jobs_app.command("show")
def jobs_show(job_id: int, config: ConfigOption = None) -> None:
    """A job's fields and its event history."""
    from ckptd.cli_output import iso, job_json

    repo = _repository(_config(config))
    job = repo.get(job_id)
    if job is None:
        raise _fail(f"job {job_id}: no such job")
    payload = job_json(job) | {"options": dict(job.options), "result": job.result, "worker": job.worker_id}
    payload["events"] = [
        {"at": iso(e.at), "event": e.event, "from": e.from_state, "to": e.to_state, "message": e.message}
        for e in repo.events(job_id)
    ]
    sys.stdout.write(json.dumps(payload, indent=2, default=str) + "\n")


@jobs_app.command("retry")
def jobs_retry(job_id: int, config: ConfigOption = None) -> None:
    """Queue a failed, dead, cancelled or done job again (attempts reset)."""
    _operator(job_id, config, "retry")


@jobs_app.command("cancel")
def jobs_cancel(job_id: int, config: ConfigOption = None) -> None:
    """Cancel a job; a running worker stops at its next heartbeat and publishes nothing."""
    _operator(job_id, config, "cancel")


def _operator(job_id: int, config: Path | None, action: str) -> None:
    repo = _repository(_config(config))
    try:
        job = getattr(repo, action)(job_id)
    except (CkptdError, ValueError) as exc:
        raise _fail(str(exc)) from None
    Console().print(f"job {job.id}: {job.state}")


@db_app.command("upgrade")
def db_upgrade(config: ConfigOption = None) -> None:
    """Apply database migrations (the daemon also does this at start)."""
    from ckptd.queue.schema import current_revision

    cfg = _config(config)
    repo = _repository(cfg)
    Console().print(f"database {cfg.database.url} at revision {current_revision(repo.engine)}")


def main() -> None:
    app()
