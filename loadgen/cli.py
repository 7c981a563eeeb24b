"""The ``loadgen`` command. The only place that turns errors into messages and exit statuses.

Exit statuses: 0 success, 1 thresholds failed, 2 usage or profile error, 3 the run could not complete.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import click

from loadgen import __version__
from loadgen.errors import LoadgenError, ProfileError, RunError

EXIT_OK = 0
EXIT_THRESHOLDS = 1
EXIT_USAGE = 2
EXIT_RUN = 3

PROFILES_DIR = Path(__file__).resolve().parent.parent / "profiles"


def _fail(code: int, message: str) -> NoReturn:
    _close_display()
    click.echo(f"loadgen: {message}", err=True)
    sys.exit(code)


def _setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else logging.INFO if verbose == 1 else logging.DEBUG
    logging.basicConfig(format="loadgen %(name)s: %(message)s", stream=sys.stderr)
    logging.getLogger().setLevel(level)


def _verbose(ctx: click.Context, param: click.Parameter, count: int) -> None:
    """``-v`` before or after the subcommand: the counts add up (``loadgen -v agent -v`` is ``-vv``)."""
    if count:
        total = ctx.meta["loadgen.verbose"] = ctx.meta.get("loadgen.verbose", 0) + count
        _setup_logging(total)


def _verbose_option() -> click.Option:
    return click.Option(
        ["-v", "--verbose"],
        count=True,
        expose_value=False,
        callback=_verbose,
        help="More logging (-v info, -vv debug).",
    )


class _Group(click.Group):
    """A group whose every command (and subgroup) also takes ``-v/--verbose``."""

    group_class = type  # subgroups are _Groups too

    def add_command(self, cmd: click.Command, name: str | None = None) -> None:
        cmd.params.append(_verbose_option())
        super().add_command(cmd, name)


def _load(path: str, target: str | None) -> Any:
    from loadgen.plan import implausible
    from loadgen.profile_file import load_profile

    try:
        profile = load_profile(path, target=target)
    except ProfileError as exc:
        _fail(EXIT_USAGE, str(exc))
    for warning in implausible(profile):
        click.echo(f"loadgen: warning: {path}: {warning}", err=True)
    return profile


_DISPLAY: Any = None  # while a coordinator runs: its live panel, or its plain lines (coordinator.panel)


def _progress(line: str) -> None:
    if _DISPLAY is not None:
        _DISPLAY.message(line)
    else:
        click.echo(line, err=True)


def _plain(ctx: click.Context, param: click.Parameter, value: bool) -> None:
    if value:
        ctx.meta["loadgen.plain"] = True


PANEL_OPTION = click.option(
    "--no-panel",
    is_flag=True,
    expose_value=False,
    callback=_plain,
    help="Plain progress lines instead of the live panel on a terminal (also with TERM=dumb).",
)


def _open_display() -> Any:
    """The live panel when stdout and stderr are a terminal, else plain lines; on stderr either way."""
    import shutil

    from coordinator.panel import PanelWriter, PlainWriter, wants_color, wants_panel

    global _DISPLAY
    ctx = click.get_current_context(silent=True)
    plain = bool(ctx is not None and ctx.meta.get("loadgen.plain"))
    if wants_panel(
        stdout_tty=sys.stdout.isatty(), stderr_tty=sys.stderr.isatty(), env=os.environ, plain=plain
    ):
        utf = (sys.stderr.encoding or "").lower().replace("-", "").startswith("utf")
        _DISPLAY = PanelWriter(
            sys.stderr,
            color=wants_color(os.environ),
            unicode=utf,
            columns=lambda: shutil.get_terminal_size().columns,
        )
    else:
        _DISPLAY = PlainWriter(sys.stderr)
    return _DISPLAY


def _close_display() -> None:
    """Restore the terminal (the cursor shown, below the last panel); before a summary or an error."""
    global _DISPLAY
    if _DISPLAY is not None:
        _DISPLAY.close()
        _DISPLAY = None


SEED_RANGE = click.IntRange(0, 2**62)
"""Seeds travel as 64-bit integers, offset per agent and per reshare: keep well inside."""

ENGINE_OPTION = click.option(
    "--engine",
    type=click.Choice(["fast", "httpx"]),
    default="fast",
    show_default=True,
    help="HTTP engine on the agents: fast (uvloop + httptools) or httpx (full-featured, slower).",
)


def _metrics_bind(ctx: click.Context, param: click.Parameter, value: str | None) -> tuple[str, int] | None:
    if value is None:
        return None
    from coordinator.metrics_server import parse_metrics_bind

    try:
        return parse_metrics_bind(value)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None


METRICS_OPTION = click.option(
    "--metrics-bind",
    metavar="HOST:PORT",
    callback=_metrics_bind,
    help="Serve Prometheus metrics at http://HOST:PORT/metrics and a live page at http://HOST:PORT/ "
    "(:PORT or PORT: on 127.0.0.1; port 0: a free one, printed). See docs/observability.md.",
)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="loadgen")
@click.option(
    "-v",
    "--verbose",
    count=True,
    expose_value=False,
    callback=_verbose,
    help="More logging (-v info, -vv debug).",
)
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Distributed open-model HTTP load generator with exact merged HDR percentiles."""
    if "loadgen.verbose" not in ctx.meta:  # else -v has set it up already
        _setup_logging(0)


@cli.command()
@click.argument("profile", type=click.Path(dir_okay=False))
@click.option("--target", help="Override the profile's target base URL.")
def plan(profile: str, target: str | None) -> None:
    """Validate PROFILE and show its rate curve, stages and expected request count. Sends nothing."""
    from loadgen.plan import render_plan

    click.echo(render_plan(_load(profile, target)))


@cli.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option(
    "--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="0 picks a free port."
)
def target(host: str, port: int) -> None:
    """Serve the built-in test target (/, /delay?ms=N, /status/CODE, /flaky?p=P, /bytes?n=N; for user
    journeys /login, /items, /cart, /buy/ID)."""
    from target.server import run_target

    run_target(host, port)


@cli.command()
@click.option("--connect", required=True, help="Coordinator endpoint, e.g. tcp://10.0.0.5:5555.")
@click.option("--id", "agent_id", help="Agent id (default: host-pid-random).")
@click.option(
    "--wait",
    default=0.0,
    type=click.FloatRange(min=0.0),
    help="Give up if no coordinator answers within this many seconds (0: wait).",
)
@click.option(
    "--coordinator-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=1.0),
    help="Stop sending load when the coordinator has been silent this long (dead-man's switch).",
)
@click.option(
    "--allow-target",
    "allow",
    multiple=True,
    help="Only accept runs against this host or host:port (wildcards allowed; repeatable).",
)
@click.option(
    "--max-rate", default=0.0, type=click.FloatRange(min=0.0), help="Refuse shares above this rate (req/s)."
)
@click.option(
    "--processes",
    default="1",
    show_default=True,
    help="Agent processes to run on this machine: a number or 'auto' (one per core).",
)
@click.option("--secret-key", type=click.Path(dir_okay=False), help="This agent's secret key (CURVE).")
@click.option(
    "--coordinator-key", type=click.Path(dir_okay=False), help="The coordinator's public key (CURVE)."
)
@click.option("--insecure", is_flag=True, help="Allow a plain-TCP control channel beyond loopback.")
def agent(
    connect: str,
    agent_id: str | None,
    wait: float,
    coordinator_timeout: float,
    allow: tuple[str, ...],
    max_rate: float,
    processes: str,
    secret_key: str | None,
    coordinator_key: str | None,
    insecure: bool,
) -> None:
    """Join a coordinator and run its share of the load."""
    count = _process_count(processes)
    setup = _client_security(connect, secret_key, coordinator_key, insecure)
    if count > 1:
        sys.exit(_fork_agents(count))
    import uvloop

    from agents.agent import Agent

    ag = Agent(
        connect,
        agent_id=agent_id,
        wait_timeout=wait if wait > 0 else float("inf"),
        coordinator_timeout=coordinator_timeout,
        allow_targets=allow,
        max_rate=max_rate,
        socket_setup=setup,
        say=_progress,
    )
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            runner.run(ag.run())
    except RunError as exc:
        _fail(EXIT_RUN, f"agent {ag.agent_id}: {exc}")
    except KeyboardInterrupt:
        _fail(EXIT_RUN, f"agent {ag.agent_id}: interrupted")


def _process_count(text: str) -> int:
    if text == "auto":
        return os.cpu_count() or 1
    try:
        n = int(text)
    except ValueError:
        _fail(EXIT_USAGE, f"--processes: {text!r} is not a number or 'auto'")
    if not 1 <= n <= 1024:
        _fail(EXIT_USAGE, f"--processes: {n} is out of range 1..1024")
    return n


def _fork_agents(n: int) -> int:
    """Run ``n`` copies of this agent command (each with --processes 1) and wait for all of them."""
    args = list(sys.argv[1:])
    for i, a in enumerate(args):
        if a == "--processes":
            args[i + 1] = "1"
        elif a.startswith("--processes="):
            args[i] = "--processes=1"
    procs = [subprocess.Popen([sys.executable, "-m", "loadgen", *args]) for _ in range(n)]
    codes = [p.wait() for p in procs]
    return max(codes)


def _client_security(
    endpoint: str, secret_key: str | None, coordinator_key: str | None, insecure: bool
) -> Callable[[Any], None] | None:
    from loadgen.security import ClientSecurity, SecurityError, apply_client, check_plain_allowed

    if secret_key or coordinator_key:
        if not (secret_key and coordinator_key):
            _fail(EXIT_USAGE, "--secret-key and --coordinator-key go together")
        sec = ClientSecurity(Path(secret_key), Path(coordinator_key))

        def setup(sock: Any) -> None:
            apply_client(sock, sec)

        return setup
    try:
        warning = check_plain_allowed(endpoint, insecure)
    except SecurityError as exc:
        _fail(EXIT_USAGE, str(exc))
    if warning:
        click.echo(warning, err=True)
    return None


def _server_security(endpoint: str, secret_key: str | None, authorized: str | None, insecure: bool) -> Any:
    from loadgen.security import SecurityError, server_socket_setup

    if bool(secret_key) != bool(authorized):
        _fail(EXIT_USAGE, "--secret-key and --authorized-agents go together")
    try:
        setup, warning = server_socket_setup(
            endpoint,
            Path(secret_key) if secret_key else None,
            Path(authorized) if authorized else None,
            insecure,
        )
    except SecurityError as exc:
        _fail(EXIT_USAGE, str(exc))
    if warning:
        click.echo(warning, err=True)
    return setup


def _coordinator_config(**kw: Any) -> Any:
    from coordinator.coordinator import CoordinatorConfig

    return CoordinatorConfig(progress_every=1.0 if sys.stderr.isatty() else 5.0, **kw)


def _run_coordinator(
    profile: Any,
    config: Any,
    *,
    spawn_agents: int = 0,
    socket_setup: Any = None,
    resume: Path | None = None,
    metrics_bind: tuple[str, int] | None = None,
) -> int:
    from coordinator.coordinator import Coordinator
    from coordinator.local_agents import local_agents as start_local_agents
    from loadgen.errors import BindError
    from loadgen.security import SecurityError

    display = _open_display()
    # local agents write through a panel (above it), which would otherwise draw over what they write
    local_agents = functools.partial(start_local_agents, output=_progress if display.in_place else None)
    status = display.status
    try:
        if resume is not None:
            coord = Coordinator.resume(resume, status=status, progress=_progress, socket_setup=socket_setup)
        else:
            coord = Coordinator(profile, config, status=status, progress=_progress, socket_setup=socket_setup)
    except LoadgenError as exc:
        _fail(EXIT_USAGE, str(exc))
    try:
        endpoint = coord.bind()
    except (SecurityError, BindError) as exc:
        coord.close()
        _fail(EXIT_USAGE, str(exc))
    metrics = _start_metrics(coord, metrics_bind) if metrics_bind is not None else None
    try:
        try:
            with local_agents(endpoint, spawn_agents), _interrupts_stop(coord):
                results = coord.run_resumed() if resume is not None else coord.run()
            if metrics is not None:
                metrics.end(results)
        except RunError as exc:
            _fail(EXIT_RUN, str(exc))
        finally:
            coord.close()
        return _report(results, coord.profile, str(coord.config.out_dir) if coord.config.out_dir else None)
    finally:
        if metrics is not None:
            metrics.close()  # once the final figures are scraped, or a few seconds


def _start_metrics(coord: Any, bind: tuple[str, int]) -> Any:
    from coordinator.metrics_server import RunMetrics, exposure_warning
    from loadgen.errors import BindError

    metrics = RunMetrics(coord, *bind)
    try:
        url = metrics.start()
    except BindError as exc:
        coord.close()
        _fail(EXIT_USAGE, f"--metrics-bind: {exc}")
    _progress(f"metrics at {url}")
    _progress(f"live page at {metrics.page_url}")
    warning = exposure_warning(bind[0])
    if warning:
        _progress(warning)
    return metrics


@contextmanager
def _interrupts_stop(coord: Any) -> Iterator[None]:
    """While the run loop runs, Ctrl-C and SIGTERM ask ``coord`` to stop cleanly (it tells the agents and
    still writes the results); a second one, or one before the run or after it, leaves at once."""
    import signal

    def handler(signum: int, frame: object) -> None:
        if not coord.interrupt():
            raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, handler) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _report(results: Mapping[str, Any], profile: Any, out: str | None) -> int:
    """Print the summary and write the reports derived from ``results`` (the coordinator judged the
    thresholds and wrote results.json). The exit status: 3 when the run was interrupted or the fleet could
    not carry its load, 1 when a threshold failed, else 0."""
    from loadgen.reports.files import HLOG_NAME, verdicts_from, write_reports
    from loadgen.reports.markdown import render_summary_text

    _close_display()
    click.echo(render_summary_text(results, verdicts_from(results)))
    if out:
        written = [Path(out) / "results.json", *write_reports(Path(out), results)]
        written += [hlog for hlog in [Path(out) / HLOG_NAME] if hlog.exists()]
        click.echo("written: " + ", ".join(str(p) for p in written), err=True)
    if results["totals"]["scheduled"] == 0:
        refused = [a["id"] for a in results.get("agents", []) if a.get("state") == "refused"]
        why = f": every agent refused it ({', '.join(refused)})" if refused else ""
        click.echo(f"loadgen: the run sent no request{why}", err=True)
        return EXIT_RUN
    if results.get("interrupted") or results.get("incomplete"):
        return EXIT_RUN
    return EXIT_OK if results["passed"] else EXIT_THRESHOLDS


@cli.command()
@click.argument("profile", type=click.Path(dir_okay=False))
@click.option("--agents", "n_agents", default=2, show_default=True, type=click.IntRange(1, 256))
@click.option("--out", type=click.Path(file_okay=False), help="Write results.json (and reports) here.")
@click.option("--target", help="Override the profile's target base URL.")
@click.option("--seed", type=SEED_RANGE, help="Seed the arrival schedules (reproducible Poisson arrivals).")
@PANEL_OPTION
@ENGINE_OPTION
@METRICS_OPTION
def run(
    profile: str,
    n_agents: int,
    out: str | None,
    target: str | None,
    seed: int | None,
    engine: str,
    metrics_bind: tuple[str, int] | None,
) -> None:
    """Run PROFILE on this machine: a coordinator and N agent processes over loopback."""
    prof = _load(profile, target)
    config = _coordinator_config(
        bind="tcp://127.0.0.1:0",
        expect_agents=n_agents,
        out_dir=Path(out) if out else None,
        join_timeout=30.0,
        seed=seed,
        engine=engine,
    )
    sys.exit(_run_coordinator(prof, config, spawn_agents=n_agents, metrics_bind=metrics_bind))


@cli.command("coordinator")
@click.argument("profile", type=click.Path(dir_okay=False), required=False)
@click.option("--bind", default="tcp://127.0.0.1:5555", show_default=True, help="Where agents connect.")
@click.option("--expect-agents", default=1, show_default=True, type=click.IntRange(1, 10_000))
@click.option(
    "--out", type=click.Path(file_okay=False), help="Write results.json, reports and checkpoints here."
)
@click.option("--target", help="Override the profile's target base URL.")
@click.option(
    "--join-timeout",
    default=300.0,
    show_default=True,
    type=click.FloatRange(min=0.0, min_open=True),
    help="Seconds to wait for the agents.",
)
@click.option(
    "--agent-timeout",
    default=3.0,
    show_default=True,
    type=click.FloatRange(min=1.0),
    help="Declare an agent lost after this many silent seconds (agents report every second).",
)
@click.option(
    "--coordinator-timeout",
    default=10.0,
    show_default=True,
    type=click.FloatRange(min=1.0),
    help="Agents stop sending load when this coordinator has been silent this long.",
)
@click.option("--seed", type=SEED_RANGE)
@click.option(
    "--resume",
    type=click.Path(file_okay=False, exists=True),
    help="Continue the run checkpointed in this folder after a coordinator crash (no PROFILE then).",
)
@click.option("--secret-key", type=click.Path(dir_okay=False), help="The coordinator's secret key (CURVE).")
@click.option(
    "--authorized-agents", type=click.Path(file_okay=False), help="Folder of agents' public keys allowed in."
)
@click.option("--insecure", is_flag=True, help="Allow a plain-TCP control channel beyond loopback.")
@PANEL_OPTION
@ENGINE_OPTION
@METRICS_OPTION
def coordinator_cmd(
    profile: str | None,
    bind: str,
    expect_agents: int,
    out: str | None,
    target: str | None,
    join_timeout: float,
    agent_timeout: float,
    coordinator_timeout: float,
    seed: int | None,
    resume: str | None,
    secret_key: str | None,
    authorized_agents: str | None,
    insecure: bool,
    engine: str,
    metrics_bind: tuple[str, int] | None,
) -> None:
    """Coordinate agents (started with `loadgen agent --connect`) through PROFILE and merge their results."""
    setup = _server_security(bind, secret_key, authorized_agents, insecure)
    if resume is not None:
        if profile is not None:
            _fail(EXIT_USAGE, "--resume continues a checkpointed run: give no PROFILE")
        sys.exit(
            _run_coordinator(None, None, socket_setup=setup, resume=Path(resume), metrics_bind=metrics_bind)
        )
    if profile is None:
        _fail(EXIT_USAGE, "a PROFILE is required (or --resume DIR)")
    prof = _load(profile, target)
    config = _coordinator_config(
        bind=bind,
        expect_agents=expect_agents,
        out_dir=Path(out) if out else None,
        join_timeout=join_timeout,
        agent_timeout=agent_timeout,
        coordinator_timeout=coordinator_timeout,
        seed=seed,
        engine=engine,
    )
    sys.exit(_run_coordinator(prof, config, socket_setup=setup, metrics_bind=metrics_bind))


@cli.group()
def keys() -> None:
    """Key pairs for the authenticated, encrypted control channel (CurveZMQ)."""


@keys.command("generate")
@click.argument("name")
@click.option("--dir", "directory", default=".", show_default=True, type=click.Path(file_okay=False))
def keys_generate(name: str, directory: str) -> None:
    """Write NAME.key (public: give it to the other side) and NAME.key_secret (keep it) into --dir."""
    from loadgen.security import SecurityError, generate_keypair

    try:
        public, secret = generate_keypair(Path(directory), name)
    except SecurityError as exc:
        _fail(EXIT_USAGE, str(exc))
    click.echo(f"public key: {public}\nsecret key: {secret} (keep it private)")


@contextmanager
def _target_process() -> Iterator[str]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "loadgen", "target", "--port", "0"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()
        if "listening on " not in line:
            raise RunError(f"the built-in target did not start: {line!r}")
        yield line.split("listening on ", 1)[1]
    finally:
        proc.terminate()
        proc.wait(timeout=10)


@cli.command()
@click.option("--out", default="demo-results", show_default=True, type=click.Path(file_okay=False))
@click.option("--agents", "n_agents", default=2, show_default=True, type=click.IntRange(1, 64))
def demo(out: str, n_agents: int) -> None:
    """A ~30 s showcase: the built-in target, N agents, ramp, hold and spike from profiles/demo.toml."""
    path = PROFILES_DIR / "demo.toml"
    if not path.exists():
        _fail(EXIT_USAGE, f"{path}: the demo profile is missing (run from a checkout of loadgen)")
    try:
        with _target_process() as url:
            prof = _load(str(path), url)
            click.echo(f"demo: built-in target at {url}, {n_agents} agents, profile {path.name}", err=True)
            config = _coordinator_config(
                bind="tcp://127.0.0.1:0", expect_agents=n_agents, out_dir=Path(out), join_timeout=30.0
            )
            code = _run_coordinator(prof, config, spawn_agents=n_agents)
    except RunError as exc:
        _fail(EXIT_RUN, str(exc))
    sys.exit(code)


@cli.command()
@click.argument("out", type=click.Path(exists=True))
def report(out: str) -> None:
    """Re-create the reports in OUT (a results folder) from its results.json, and print the summary."""
    from loadgen.reports.files import read_results, verdicts_from, write_reports
    from loadgen.reports.markdown import render_summary_text

    try:
        results = read_results(Path(out))
    except LoadgenError as exc:
        _fail(EXIT_USAGE, str(exc))
    click.echo(render_summary_text(results, verdicts_from(results)))
    if Path(out).is_dir():
        written = write_reports(Path(out), results)
        click.echo("written: " + ", ".join(str(p) for p in written), err=True)
    sys.exit(EXIT_OK if results.get("passed", True) else EXIT_THRESHOLDS)


@cli.command()
@click.argument("baseline", type=click.Path(exists=True))
@click.argument("candidate", type=click.Path(exists=True))
@click.option(
    "--max-regression",
    default="10%",
    show_default=True,
    help="Allowed worsening, e.g. 10% (a bare number is a fraction: 0.1). Latency changes under 1 ms, or "
    "under the histograms' precision (0.1%), never count; throughput can fall by at most 100%.",
)
def compare(baseline: str, candidate: str, max_regression: str) -> None:
    """Compare two runs (results folders or results.json files); exit 1 on a regression beyond the limit.

    Latency that rises by less than 1 ms (or less than the histograms' precision) is noise, never a
    regression, whatever its percentage.
    """
    from loadgen.reports.compare import compare as compare_runs
    from loadgen.reports.compare import parse_limit, render_comparison_md
    from loadgen.reports.files import read_results

    try:
        limit = parse_limit(max_regression)
    except ValueError as exc:
        _fail(EXIT_USAGE, f"--max-regression: {exc}")
    try:
        base, cand = read_results(Path(baseline)), read_results(Path(candidate))
    except LoadgenError as exc:
        _fail(EXIT_USAGE, str(exc))
    cmp = compare_runs(base, cand, limit)
    click.echo(render_comparison_md(cmp))
    sys.exit(EXIT_THRESHOLDS if cmp.regressed else EXIT_OK)


def _sigterm_as_interrupt() -> None:
    import signal

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def main() -> None:
    from loadgen.histogram import keep_memory_flat

    keep_memory_flat()
    _sigterm_as_interrupt()
    try:
        cli(prog_name="loadgen")
    except LoadgenError as exc:  # a last resort: commands map their own errors
        _fail(EXIT_RUN, str(exc))
    finally:  # Ctrl-C twice, a crash: the terminal gets its cursor back
        _close_display()
