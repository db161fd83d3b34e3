"""Walltimes as sites write them: every form each scheduler takes, quoted or not, from a profile or
`--set`, reaches the job script as written and gives workers a --lifetime shorter than the walltime
the scheduler reads from it. Checked on rendered and started job scripts for all four schedulers,
and against the real SLURM and SGE: what they read from each form, and a real launch."""
from __future__ import annotations

import re
import textwrap

import pytest

from conftest import run_resqmp
from hpc_fixtures import *  # noqa: F403 - fixtures and helpers
from hpc_fixtures import SGE_ENV
from scheduler_parsers import needs_sbatch, sbatch_reads
from resqmp import profiles
from resqmp.backends import for_profile
from resqmp.backends import jobqueue as jq
from resqmp.errors import ExitCode, ProfileError
from resqmp.worker_env import worker_environment

# how each scheduler reads a walltime (checked below against the real SLURM and SGE; PBS and LSF
# from their manuals): form as written -> seconds of the limit
FORMS = {
    # minutes, minutes:seconds, hours:minutes:seconds, days-hours[:minutes[:seconds]]
    "slurm": {"2:00:00": 7200, "02:00:00": 7200, "1-00:00:00": 86400, "90": 5400, "1:30": 90,
              "1-12": 129600, "45:00": 2700},
    # seconds (decimal, hexadecimal or octal, as C's strtol reads them) or hours:minutes:seconds,
    # a zero field may be left empty (sge_types(5)); qsub refuses minutes:seconds
    "sge": {"2:00:00": 7200, "02:00:00": 7200, "90": 90, "0:01:30": 90, "48:00:00": 172800,
            "0x1C20": 7200, "017040": 7712, "1::1": 3601},
    # [[hours:]minutes:]seconds
    "pbs": {"2:00:00": 7200, "02:00:00": 7200, "90": 90, "1:30": 90, "48:00:00": 172800},
    # [hours:]minutes
    "lsf": {"2:00": 7200, "02:00": 7200, "90": 5400, "1:30": 5400},
}
# forms the scheduler does not take: refused with exit 4 before anything is submitted
REFUSED = {"slurm": ["1:2:3:4", "2h", "1.5"], "sge": ["1:30", "1-00:00:00", "1.5", "1:2:3:4"],
           "pbs": ["1-00:00:00", "2h"], "lsf": ["2:00:00", "1-00:00:00", "1.5"]}
DIRECTIVE = {"slurm": "#SBATCH -t {}", "sge": "#$ -l h_rt={}", "pbs": "#PBS -l walltime={}", "lsf": "#BSUB -W {}"}
SOURCES = ("profile", "profile quoted", "--set", "--set quoted")

CASES = [(b, w, s, src) for b, forms in FORMS.items() for w, s in forms.items() for src in SOURCES]


def load(backend: str, walltime: str, source: str, tmp_path, *overrides):
    """The profile a site gets when it writes `walltime` the way `source` says."""
    if source.startswith("profile"):
        value = f'"{walltime}"' if source.endswith("quoted") else walltime
        path = tmp_path / "site.yaml"
        path.write_text(f"extends: {backend}\ncluster:\n  walltime: {value}\n")
        return profiles.load(str(path), overrides), [str(path), *_set_args(overrides)]
    value = f'"{walltime}"' if source.endswith("quoted") else walltime
    item = f"cluster.walltime={value}"
    return profiles.load(backend, [item, *overrides]), [backend, "--set", item, *_set_args(overrides)]


def _set_args(overrides) -> list[str]:
    return [a for o in overrides for a in ("--set", o)]


def lifetime_of(script: str) -> tuple[int, int]:
    m = re.search(r"--lifetime (\d+)s --lifetime-stagger (\d+)s", script)
    assert m, script
    return int(m.group(1)), int(m.group(2))


def assert_retires_in_time(script: str, seconds: int) -> None:
    """Workers retire before the scheduler's limit, and not much earlier: the 10% margin (at most
    10 min) and the stagger (5%, at most 5 min) that lifetime_args documents."""
    lifetime, stagger = lifetime_of(script)
    # Not a stopwatch: lifetime and stagger are numbers read from the rendered job script and
    # `seconds` is the walltime the test wrote; nothing here is measured, so machine speed or load
    # cannot change the outcome.
    assert lifetime + stagger < seconds
    assert lifetime + stagger >= seconds - min(0.1 * seconds, 600) - 1
    assert 0 < stagger <= min(0.05 * seconds, 300)


@pytest.mark.parametrize("backend,walltime,seconds,source", CASES,
                         ids=[f"{b}-{w}-{src}" for b, w, _, src in CASES])
def test_every_walltime_form_reaches_the_job_script_as_written(backend, walltime, seconds, source, tmp_path):
    p, _ = load(backend, walltime, source, tmp_path)
    script = for_profile(p, worker_environment(p)).render()
    assert DIRECTIVE[backend].format(walltime) in script.splitlines(), script
    assert_retires_in_time(script, seconds)


@pytest.mark.parametrize("backend", FORMS)
def test_render_on_the_command_line_and_the_script_start_submits(backend, tmp_path):
    """`resqmp profiles render` of a profile with an unquoted walltime, and the job script of the
    cluster start() builds from it: the same directive and lifetime."""
    walltime, seconds = next(iter(FORMS[backend].items()))
    p, args = load(backend, walltime, "profile", tmp_path, f"storage.shared_directory={tmp_path}")
    out = run_resqmp("profiles", "render", *args, check=0).stdout
    assert DIRECTIVE[backend].format(walltime) in out.splitlines(), out
    assert_retires_in_time(out, seconds)
    cluster = for_profile(p, worker_environment(p)).start()
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    assert DIRECTIVE[backend].format(walltime) in script.splitlines(), script
    assert lifetime_of(script) == lifetime_of(out)


REFUSED_CASES = [(b, w, src) for b, forms in REFUSED.items() for w in forms for src in ("profile", "--set")]


@pytest.mark.parametrize("backend,walltime,source", REFUSED_CASES,
                         ids=[f"{b}-{w}-{src}" for b, w, src in REFUSED_CASES])
def test_a_form_the_scheduler_does_not_take_is_refused(backend, walltime, source, tmp_path):
    p, args = load(backend, walltime, source, tmp_path)
    with pytest.raises(ProfileError, match=f"cluster.walltime '?{re.escape(walltime)}'?: not a {backend} walltime"):
        for_profile(p, worker_environment(p)).render()
    if source == "profile":
        proc = run_resqmp("profiles", "render", *args)
        assert proc.returncode == ExitCode.PROFILE, proc.stderr
        assert proc.stderr.strip().splitlines() == [proc.stderr.strip()] and "cluster.walltime" in proc.stderr


# "No limit" as each scheduler writes it (sbatch --time: 0, -1, UNLIMITED or INFINITE, any case;
# SGE's time values: INFINITY): the directive as written, and no --lifetime, since a worker has no
# end to retire before. PBS and LSF have no such form for a job's walltime.
NO_LIMIT = {"slurm": ["UNLIMITED", "unlimited", "INFINITE", "Infinite", "0", "-1", "0:00", "00:00:00"],
            "sge": ["INFINITY", "infinity"]}
NO_LIMIT_CASES = [(b, w, src) for b, forms in NO_LIMIT.items() for w in forms for src in SOURCES]


@pytest.mark.parametrize("backend,walltime,source", NO_LIMIT_CASES,
                         ids=[f"{b}-{w}-{src}" for b, w, src in NO_LIMIT_CASES])
def test_no_limit_reaches_the_job_script_and_workers_do_not_retire(backend, walltime, source, tmp_path):
    p, _ = load(backend, walltime, source, tmp_path)
    script = for_profile(p, worker_environment(p)).render()
    assert DIRECTIVE[backend].format(walltime) in script.splitlines(), script
    assert "--lifetime" not in script, script


def test_no_limit_on_the_command_line_and_a_lifetime_of_ones_own(tmp_path):
    """`resqmp profiles render` exits 0 on it; a --lifetime the site gives is kept as given."""
    out = run_resqmp("profiles", "render", "slurm", "--set", "cluster.walltime=UNLIMITED", check=0).stdout
    assert "#SBATCH -t UNLIMITED" in out.splitlines() and "--lifetime" not in out
    p, _ = load("slurm", "UNLIMITED", "--set", tmp_path,
                'cluster.worker_extra_args=["--lifetime", "11h", "--lifetime-stagger", "10m"]')
    script = for_profile(p, worker_environment(p)).render()
    assert "--lifetime 11h --lifetime-stagger 10m" in script and script.count("--lifetime ") == 1


def _sbatch_time(seconds: float) -> str:
    """How sbatch -vvv shows a time limit: whole minutes rounded up, [D-]HH:MM:SS; UNLIMITED."""
    if seconds == float("inf"):
        return "UNLIMITED"
    days, rest = divmod(-(-int(seconds) // 60) * 60, 86400)
    clock = f"{rest // 3600:02}:{rest % 3600 // 60:02}:{rest % 60:02}"
    return f"{days}-{clock}" if days else clock


@needs_sbatch
@pytest.mark.parametrize("walltime", list(FORMS["slurm"]) + NO_LIMIT["slurm"])
def test_sbatch_reads_each_rendered_form_as_resqmp_does(walltime, tmp_path):
    """The real sbatch's reading of the job script resqmp renders (no controller needed:
    scheduler_parsers): the same limit resqmp computes its --lifetime from, or none."""
    p, _ = load("slurm", walltime, "profile", tmp_path)
    seconds = jq.walltime_seconds("slurm", walltime)
    assert sbatch_reads(for_profile(p, worker_environment(p)).render(), tmp_path)["time"] == _sbatch_time(seconds)


# --------------------------------------------------------------------------- the real schedulers

def _slurm_seconds(limit: str) -> int:
    """SLURM's TimeLimit ([D-]HH:MM:SS) in seconds."""
    days, _, clock = limit.rpartition("-")
    h, m, s = (int(x) for x in clock.split(":"))
    return int(days or 0) * 86400 + h * 3600 + m * 60 + s


def _slurm_jobs(job_name: str) -> dict[str, dict[str, str]]:
    """Every job SLURM still knows (also ended ones, for MinJobAge) named job_name: id -> fields."""
    out = sh("scontrol", "show", "job", "-o").stdout
    jobs = {}
    for line in out.splitlines():
        fields = dict(f.split("=", 1) for f in line.split() if "=" in f)
        if fields.get("JobName") == job_name:
            jobs[fields["JobId"]] = fields
    return jobs


def _submitted_job(cluster) -> str:
    cluster.scale(1)
    ids = wait_until(lambda: cluster.job_ids(), 60)
    assert ids, "no job submitted"
    return ids[0]


@pytest.mark.slurm
@pytest.mark.timeout(600)
def test_slurm_reads_each_form_as_resqmp_does(slurm, hpc_workdir, tmp_path):
    """What start() submits for each form (held, so it takes no slot): SLURM's TimeLimit is the
    form's seconds, rounded up to whole minutes as SLURM does; forms resqmp refuses, sbatch refuses."""
    name = unique("wt-")

    def held_time_limit(walltime: str, how: str) -> str:
        """SLURM's TimeLimit of the worker job start() submits (held) for this walltime."""
        p, _ = load(PROFILES["slurm"], walltime, how, tmp_path, 'cluster.job_extra_directives=["--hold"]',
                    f"cluster.job_name={name}", f"cluster.log_directory={hpc_workdir}/logs")
        cluster = for_profile(p, worker_environment(p)).start()
        try:
            job = _submitted_job(cluster)
            return wait_until(lambda: _slurm_jobs(name).get(job, {}).get("TimeLimit"), 30)
        finally:
            cluster.close()

    for walltime, seconds in FORMS["slurm"].items():
        limit = held_time_limit(walltime, "profile")
        assert _slurm_seconds(limit) == -(-seconds // 60) * 60, (walltime, limit)
    for walltime in NO_LIMIT["slurm"]:       # the CI partition's MaxTime is INFINITE
        limit = held_time_limit(walltime, "profile quoted")
        assert limit == "UNLIMITED", (walltime, limit)
    for walltime in REFUSED["slurm"]:
        proc = sh("sbatch", "--hold", "-t", walltime, "-J", name, "--wrap", "true")
        assert proc.returncode != 0 and "invalid --time" in proc.stderr.lower(), (walltime, proc.stdout, proc.stderr)
    assert wait_until(lambda: not scheduler_jobs("slurm", name), 30), sh("squeue").stdout


@pytest.mark.sge
@pytest.mark.timeout(600)
def test_sge_reads_each_form_as_resqmp_does(sge, hpc_workdir, tmp_path):
    """The same for SGE: qstat -j shows h_rt in seconds; forms resqmp refuses, qsub refuses."""
    name = unique("wt")
    for walltime, seconds in FORMS["sge"].items():
        p, _ = load(PROFILES["sge"], walltime, "profile", tmp_path, 'cluster.job_extra_directives=["-h"]',
                    f"cluster.job_name={name}", f"cluster.log_directory={hpc_workdir}/logs")
        cluster = for_profile(p, worker_environment(p)).start()
        try:
            job = _submitted_job(cluster)
            info = sh("qstat", "-j", job, env=SGE_ENV).stdout
        finally:
            cluster.close()
        assert re.search(rf"hard resource_list:.*\bh_rt={seconds}\b", info), (walltime, info)
    for walltime in NO_LIMIT["sge"]:
        p, _ = load(PROFILES["sge"], walltime, "profile", tmp_path, 'cluster.job_extra_directives=["-h"]',
                    f"cluster.job_name={name}", f"cluster.log_directory={hpc_workdir}/logs")
        cluster = for_profile(p, worker_environment(p)).start()
        try:
            job = _submitted_job(cluster)
            info = sh("qstat", "-j", job, env=SGE_ENV).stdout
        finally:
            cluster.close()
        assert re.search(r"hard resource_list:.*\bh_rt=infinity\b", info, re.I), (walltime, info)
    for walltime in [w for w in REFUSED["sge"] if w != "1.5"]:
        proc = sh("qsub", "-h", "-N", name, "-l", f"h_rt={walltime}", "-b", "y", "true", env=SGE_ENV)
        assert proc.returncode != 0 and "not a time value" in proc.stderr, (walltime, proc.stdout, proc.stderr)
    assert wait_until(lambda: not scheduler_jobs("sge", name), 30), sh("qstat", "-u", "*", env=SGE_ENV).stdout


@pytest.mark.slurm
@pytest.mark.timeout(600)
def test_a_launch_with_an_unquoted_walltime_asks_slurm_for_it(slurm, hpc_example, hpc_workdir, local_reference):
    """A site profile with `walltime: 2:00:00` unquoted (YAML 1.1 read 7200: `-t 7200`, five days):
    the worker jobs of a real launch have SLURM TimeLimit 02:00:00 and retire 15 min before it."""
    name = unique("wt-")
    profile = hpc_workdir / f"{name}.yaml"
    profile.write_text(textwrap.dedent(f"""\
        extends: {PROFILES['slurm']}
        cluster:
          walltime: 2:00:00
          job_name: {name}
          log_directory: {hpc_workdir}/logs
        """))
    out = hpc_workdir / name / "faults.epc"
    out.parent.mkdir()
    launch(profile, hpc_example["batch"], out, check=0)
    assert_same_model(out, local_reference)
    jobs = _slurm_jobs(name)
    assert jobs and {j["TimeLimit"] for j in jobs.values()} == {"02:00:00"}, jobs
    for job in jobs:
        script = sh("scontrol", "write", "batch_script", job, "-").stdout
        assert "#SBATCH -t 2:00:00" in script.splitlines() and "--lifetime 6300s --lifetime-stagger 300s" in script
