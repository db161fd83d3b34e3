"""The `resqmp` command line."""
from __future__ import annotations

import functools
import logging
import sys
import traceback
from pathlib import Path

import click

from resqmp.errors import ExitCode, ResqmpError
from resqmp.text import printable

EXIT_CODES_HELP = """\b
Exit codes:
  0  every task succeeded        4  profile error (or bad --set)
  1  internal error (a bug)      5  batch or input error
  2  usage error                 6  output error (OUT unusable, an input, or not
  3  some tasks failed              resqmp's; disk full; journal unreadable)
  7  cluster error (no workers, shared dir not visible)
  130 interrupted (resume by running the same command again)"""


def _say(line: str, err: bool = False) -> None:
    """A line for the user: what it names (a batch's task names, paths, errors) shown printable."""
    click.echo(printable(line), err=err)


def _fail(message: str, code: int) -> None:
    _say(f"resqmp: error: {message}", err=True)
    sys.exit(code)


def _warn(warnings) -> None:
    for warning in warnings:
        _say(f"resqmp: warning: {warning}", err=True)


class _PrintableFormatter(logging.Formatter):
    """Log lines on the terminal: the message printable (a task's name or error may be in it); a
    traceback (--debug) as it is."""
    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = printable(record.message)
        return super().formatMessage(record)


def handle_errors(fn):
    """One line per error, a documented exit code; the traceback only with --debug."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        debug = click.get_current_context().find_root().obj.get("debug", False)
        try:
            return fn(*args, **kwargs)
        except ResqmpError as e:
            if debug:
                traceback.print_exc()
            _fail(str(e), e.exit_code)
        except KeyboardInterrupt:
            _fail("interrupted", ExitCode.INTERRUPTED)
        except Exception as e:   # noqa: BLE001
            if debug:
                traceback.print_exc()
            _fail(f"internal error: {type(e).__name__}: {e} (rerun with --debug for the traceback)",
                  ExitCode.INTERNAL)
    return wrapper


@click.group(epilog=EXIT_CODES_HELP)
@click.option("--debug", is_flag=True, help="Show tracebacks and debug logs.")
@click.version_option(package_name="resqmp")
@click.pass_context
def main(ctx, debug):
    """Run resqpy wrapper batches on a Dask cluster and recombine them into one EPC."""
    ctx.ensure_object(dict)
    ctx.obj["debug"] = debug
    handler = logging.StreamHandler()
    handler.setFormatter(_PrintableFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=logging.DEBUG if debug else logging.WARNING, handlers=[handler])
    # distributed configures its own INFO-level handlers from dask's config when it is first
    # imported (later, lazily); its chatter is for --debug only
    import dask.config
    level = "debug" if debug else "warning"
    # a worker that cannot start logs its traceback through the nanny (in the launcher and in
    # local worker processes); resqmp reports the worker's own error as its one-line error
    dask.config.set({"logging": {**(dask.config.get("logging", {}) or {}),
                                 "distributed": level, "distributed.client": level,
                                 "distributed.nanny": "debug" if debug else "critical"}})
    for name in ("dask_jobqueue", "dask_kubernetes", "kr8s"):
        logging.getLogger(name).setLevel(logging.DEBUG if debug else logging.WARNING)


def console_main() -> None:
    """The `resqmp` command (pyproject's console script): main() in a process that ends with it,
    so a signal that stopped a command leaves signals ignored while the process exits."""
    from resqmp import interrupts
    interrupts.process_ends_with_the_command()
    main()


def _allow_entries(values) -> tuple[str, ...]:
    from resqmp.batch import check_allow_entry
    try:
        return tuple(check_allow_entry(v) for v in values)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--allow-wrapper") from None


@main.command(epilog=EXIT_CODES_HELP)
@click.option("--profile", "profile_ref", required=True, help="Profile name or path to a profile .yaml.")
@click.option("--batch", "batch_path", required=True, type=click.Path(dir_okay=False), help="Batch file (YAML or JSON).")
@click.option("--output", required=True, type=click.Path(dir_okay=True), help="Recombined EPC to write (its .h5 beside it).")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a profile key for this run, e.g. scaling.workers=8.")
@click.option("--workers", type=click.IntRange(min=1), help="Fixed number of workers; replaces the profile's adaptive scaling (and says so).")
@click.option("--fresh", is_flag=True, help="Ignore the journal of an earlier interrupted run and start over.")
@click.option("--keep-task-files", is_flag=True, default=None, help="Keep each task's EPC in the shared directory.")
@click.option("--overwrite", is_flag=True, help="Replace files at OUTPUT's names (the EPC, its .h5, its report) "
              "that resqmp did not write for this output.")
@click.option("--performance-report", "performance_report", type=click.Path(dir_okay=False), metavar="FILE.html",
              help="Write distributed's performance report of the run (task stream, profiles, bandwidth) to FILE.html.")
@click.option("--allow-wrapper", "allowed_wrappers", multiple=True, metavar="MODULE:FUNCTION",
              callback=lambda ctx, param, values: _allow_entries(values),
              help="Let the batch run this function besides resqpy's wrappers (MODULE:* for every "
                   "function defined in MODULE); repeatable. Adds to the profile's tasks.allowed_wrappers.")
@click.option("--upload", "uploads", multiple=True, metavar="PATH",
              help="Your own code for the workers: a .py file or a package folder, shipped to every worker "
                   "(also those joining later) before any task; repeatable. Adds to the profile's tasks.upload. "
                   "The wrapper must still be allowed to run.")
@handle_errors
def launch(profile_ref, batch_path, output, overrides, workers, fresh, keep_task_files, overwrite, performance_report,
           allowed_wrappers, uploads):
    """Provision a cluster from PROFILE, run every task of BATCH, write the recombined EPC at OUTPUT.

    A JSON run report is written beside the output (out.report.json). Running the same command
    again after an interruption resumes: completed tasks are not rerun.
    """
    from resqmp import interrupts
    from resqmp.run import launch as do_launch
    # Ctrl-C, a scheduler's kill, `kill`: the cluster is torn down cleanly, nothing is written at OUT
    with interrupts.handling("resqmp: stopping: tearing down the cluster, nothing is written at OUT"):
        result = do_launch(profile_ref, batch_path, output, tuple(overrides), workers=workers, fresh=fresh,
                           keep_task_files=keep_task_files, overwrite=overwrite,
                           performance_report=performance_report, allowed_wrappers=allowed_wrappers,
                           uploads=uploads)
    resumed = f", {result.resumed} resumed" if result.resumed else ""
    _say(f"resqmp: {result.succeeded} succeeded, {result.failed} failed{resumed}")
    if result.partial:
        _say(f"resqmp: output {result.output} kept: this run was not fully successful")
        _say(f"resqmp: partial model {result.partial}")
    else:
        _say(f"resqmp: output {result.output}")
    _say(f"resqmp: report {result.report}")
    sys.exit(result.exit_code)


@main.group()
def profiles():
    """List, show, validate, render and check cluster profiles."""


@profiles.command("list")
@handle_errors
def profiles_list():
    """Every profile found: name, backend, where it was found (later layers win). A profile that
    does not load is listed as INVALID, and why is printed as a warning."""
    from resqmp import profiles as prof
    rows = []
    for name, (layer, path) in sorted(prof.available().items()):
        try:
            backend = prof.load(str(path)).backend
        except ResqmpError as e:
            # one broken file (another user's, a site's) must not hide the others
            _say(f"resqmp: warning: {e}", err=True)
            backend = "INVALID"
        rows.append((name, backend, f"{layer}: {path}"))
    width = max((len(r[0]) for r in rows), default=4)
    click.echo(f"{'NAME':<{width}}  {'BACKEND':<10}  FOUND IN")
    for name, backend, where in rows:
        click.echo(f"{name:<{width}}  {backend:<10}  {where}")


@profiles.command("show")
@click.argument("name")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
@handle_errors
def profiles_show(name, overrides):
    """The effective profile (extends chain, --set, the site's dask config and resqmp's defaults
    applied) and the worker environment, each value marked with where it came from."""
    from resqmp import profiles as prof
    from resqmp.worker_env import worker_environment
    p = prof.load(name, overrides)
    _warn(p.warnings)
    click.echo(prof.annotated(p, worker_environment(p)), nl=False)


@profiles.command("validate")
@click.argument("refs", nargs=-1)
@handle_errors
def profiles_validate(refs):
    """Validate the named profiles, files or folders of .yaml files (all profiles found when none
    are given). A profile is valid when it loads and its backend can render what it would start."""
    from resqmp import profiles as prof
    from resqmp.backends import for_profile
    from resqmp.worker_env import worker_environment
    targets: list[str] = []
    for ref in refs:
        folder = Path(ref)
        targets += sorted(str(p) for p in folder.glob("*.y*ml")) if folder.is_dir() else [ref]
    if not refs:
        targets = [str(path) for _, path in prof.available().values()]
    bad = 0
    for ref in targets:
        try:
            p = prof.load(ref)
            _warn(p.warnings)
            for_profile(p, worker_environment(p)).render()
            click.echo(f"ok       {p.name} ({p.backend}) {p.source}")
        except ResqmpError as e:
            bad += 1
            _say(f"invalid  {e}", err=True)
        except (ValueError, TypeError) as e:
            bad += 1
            _say(f"invalid  profile {ref}: {e}", err=True)
    if not targets:
        _fail(f"no profiles found in {', '.join(refs)}", ExitCode.PROFILE)
    if bad:
        sys.exit(ExitCode.PROFILE)


@profiles.command("render")
@click.argument("name")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE")
@handle_errors
def profiles_render(name, overrides):
    """What would be started: cluster kwargs (local), the job script (jobqueue), the manifest (kubernetes)."""
    from resqmp import profiles as prof
    from resqmp.backends import for_profile
    from resqmp.worker_env import worker_environment
    p = prof.load(name, overrides)
    _warn(p.warnings)
    click.echo(for_profile(p, worker_environment(p)).render(), nl=False)


CHECK_EXIT_CODES_HELP = """\b
Exit codes (the first failing stage's):
  0  every stage passed          6  example: the shared directory is missing or
  3  run: an example task failed    not writable here
  4  profile: does not load      7  submission, joined, tls, environment, shared,
  130 interrupted (torn down)       inputs, teardown: the cluster's side"""


@profiles.command("check", epilog=CHECK_EXIT_CODES_HELP)
@click.argument("name")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a profile key for this check.")
@click.option("--workers", type=click.IntRange(min=1), help="Workers to start (default: the profile's, at most 2).")
@handle_errors
def profiles_check(name, overrides, workers):
    """Start NAME's cluster for real and check every stage a launch depends on, one line each:
    profile, example batch, submission, workers joined, TLS, worker environment, shared
    directory, inputs, a two-task example run and its recombination, teardown. Exit 0 only when
    every stage passed."""
    from resqmp import interrupts
    from resqmp.doctor import check
    with interrupts.handling("resqmp: stopping: tearing down the check's cluster"):
        check(name, tuple(overrides), workers=workers)
    click.echo(f"resqmp: profile {name}: every stage passed")


@main.command()
@click.option("--profile", "profile_ref", default="local", show_default=True,
              help="Whose worker environment (NUMBA_CACHE_DIR, RESQPY_NUMBA_CACHE) to fill the cache for.")
@handle_errors
def warm(profile_ref):
    """Fill resqpy's numba cache once, here, so workers sharing it start without the JIT."""
    import json
    import os
    from resqmp import profiles as prof
    from resqmp.worker_env import worker_environment
    # before numba is imported: it reads its settings once
    os.environ.update(worker_environment(prof.load(profile_ref), expand=True))
    from resqmp.warm import warm_numba_cache
    result = warm_numba_cache()
    click.echo(json.dumps(result, indent=2))
    if result.get("errors"):
        sys.exit(ExitCode.INTERNAL)


@main.command()
@click.option("--out", "out_dir", required=True, type=click.Path(file_okay=False), help="Folder to write into.")
@click.option("--surfaces", type=click.IntRange(min=1), default=8, show_default=True, help="Number of fault surfaces.")
@handle_errors
def example(out_dir, surfaces):
    """Write a small synthetic RESQML model and batch files (find-faces, mesh, blocked wells)."""
    from resqmp.example import write_example
    info = write_example(Path(out_dir), surfaces=surfaces)
    _say(f"resqmp: model  {info['epc']}")
    _say(f"resqmp: batch  {info['batch']}  ({surfaces} find-faces tasks)")
    _say(f"resqmp: also   {info['batch_mesh']}, {info['batch_wells']}")
    _run_it(Path(info["batch"]), "faults")


# --- resqmp batch: batch files from a model (issue 12) ----------------------------------------
def _title_regex(ctx, param, value):
    import re
    if value is not None:
        try:
            re.compile(value)
        except re.error as e:
            raise click.BadParameter(f"{value!r} is not a regular expression ({e})")
    return value


BATCH_EXIT_CODES_HELP = """\b
Exit codes:
  0  batch file written          5  model error (no such grid or part, a title naming several
  1  internal error (a bug)         grids), unknown --set key; nothing written
  2  usage error                 6  BATCH.yaml exists (no --force) or its folder is missing"""

_grid_option = click.option("--grid", "grid_spec", required=True, metavar="GRID.epc[:UUID_OR_TITLE]",
                            help="The grid: an EPC holding one IjkGrid, or EPC:UUID, or EPC:TITLE.")


def _batch_options(fn):
    """Options every `resqmp batch` command shares, after its own."""
    for option in reversed([
        click.option("--title", "title_regex", metavar="REGEX", callback=_title_regex,
                     help="Only parts whose title matches REGEX (Python re.search; anchor with ^...$)."),
        click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                     help="A keyword argument of the wrapper for every task (value parsed as YAML)."),
        click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="Batch file to write (YAML)."),
        click.option("--force", is_flag=True, help="Replace OUTPUT if it exists."),
    ]):
        fn = option(fn)
    return fn


def _write_batch(kind: str, plan, sets, output, force) -> None:
    import shlex
    from resqmp import batch_writer
    batch_writer.apply_sets(plan, batch_writer.parse_sets(sets))
    command = "resqmp batch " + " ".join(shlex.quote(a) for a in sys.argv[sys.argv.index(kind):]) \
        if kind in sys.argv else f"resqmp batch {kind}"
    out = batch_writer.write(plan, output, command, force=force)
    _say(f"resqmp: batch {out}: {len(plan.tasks)} task{'s' * (len(plan.tasks) != 1)}, wrapper {plan.wrapper}")
    _run_it(out)


def _run_it(batch_file: Path, stem: str | None = None) -> None:
    """The launch command to try next, with an --output that is safe to write (batch_writer.suggested_output)."""
    import shlex
    from resqmp.batch_writer import suggested_output
    out = suggested_output(batch_file, stem)
    output = shlex.quote(str(out)) if out is not None else "OUT.epc"
    _say(f"run it: resqmp launch --profile local --batch {shlex.quote(str(batch_file))} --output {output}")


@main.group("batch", epilog=BATCH_EXIT_CODES_HELP)
def batch_group():
    """Write a batch file from a model: one task per surface, well trajectory or column property.

    Tasks follow the model's part order and are named by the part's title. OUTPUT is written
    atomically after the checks `launch` makes; it is never replaced without --force.
    """


@batch_group.command("faces", epilog=BATCH_EXIT_CODES_HELP)
@_grid_option
@click.option("--surfaces", "surfaces_epc", required=True, type=click.Path(dir_okay=False),
              help="EPC holding the surfaces.")
@click.option("--type", "surface_type", type=click.Choice(["triangulated", "pointset", "all"]),
              default="triangulated", show_default=True,
              help="TriangulatedSetRepresentation, PointSetRepresentation (triangulated by the wrapper), or both.")
@_batch_options
@handle_errors
def batch_faces(surfaces_epc, surface_type, grid_spec, title_regex, sets, output, force):
    """A find-faces task per surface: resqpy's regular wrapper for an aligned RegularGrid,
    resqmp.wrappers:find_faces_to_represent_surface_wrapper for any other IjkGrid."""
    from resqmp.batch_writer import plan_faces
    _write_batch("faces", plan_faces(grid_spec, surfaces_epc, surface_type, title_regex), sets, output, force)


@batch_group.command("wells", epilog=BATCH_EXIT_CODES_HELP)
@_grid_option
@click.option("--trajectories", "trajectories_epc", required=True, type=click.Path(dir_okay=False),
              help="EPC holding the well trajectories.")
@_batch_options
@handle_errors
def batch_wells(trajectories_epc, grid_spec, title_regex, sets, output, force):
    """A blocked-well task per well trajectory (resqpy's blocked_well_from_trajectory)."""
    from resqmp.batch_writer import plan_wells
    _write_batch("wells", plan_wells(grid_spec, trajectories_epc, title_regex), sets, output, force)


@batch_group.command("mesh", epilog=BATCH_EXIT_CODES_HELP)
@_grid_option
@click.option("--properties", "properties_epc", type=click.Path(dir_okay=False),
              help="EPC holding the column properties (default: the grid's EPC; resqpy's wrapper reads them there).")
@_batch_options
@handle_errors
def batch_mesh(properties_epc, grid_spec, title_regex, sets, output, force):
    """A mesh task per column property of an aligned RegularGrid (resqpy's
    mesh_from_regular_grid_column_property)."""
    from resqmp.batch_writer import plan_mesh
    _write_batch("mesh", plan_mesh(grid_spec, properties_epc, title_regex), sets, output, force)
# --- end of resqmp batch ----------------------------------------------------------------------
