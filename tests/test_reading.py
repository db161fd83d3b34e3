"""How resqmp reads its data files (profiles, `--set` values, batch files): no value a site writes
is silently turned into a number, and every file it cannot read gives one line and its exit code.
The walltime forms per scheduler, end to end, are in test_walltime.py."""
from __future__ import annotations

import codecs
import json
import textwrap

import pytest

from conftest import run_resqmp
from resqmp import batch, datafile, profiles
from resqmp.errors import BatchError, ExitCode, ProfileError

# (as written in the file, unquoted; the value resqmp must read)
VALUES = [
    # times: YAML 1.1 reads 2:00:00 as 7200 and 1:30 as 90 (base 60)
    ("2:00:00", "2:00:00"), ("02:00:00", "02:00:00"), ("1:30", "1:30"), ("1-00:00:00", "1-00:00:00"),
    ("12:30:45", "12:30:45"), ("190:20:30", "190:20:30"),
    # zero-padded, octal-, hex-, binary-looking: YAML 1.1 reads 010 as 8 and 0x1F as 31
    ("010", "010"), ("0777", "0777"), ("007", "007"), ("0x1F", "0x1F"), ("0o17", "0o17"), ("0b101", "0b101"),
    ("1_000", "1_000"), ("+5", "+5"), ("-0", "-0"),
    # versions and floats whose text does not round-trip: YAML 1.1 reads 3.10 as 3.1
    ("3.10", "3.10"), ("1.50", "1.50"), ("2.0.1", "2.0.1"), ("1e3", "1e3"), ("1E-5", "1E-5"), (".5", ".5"),
    ("1.", "1."), (".inf", ".inf"), (".nan", ".nan"),
    # YAML 1.1 booleans: yes/no/on/off/y/n
    ("yes", "yes"), ("no", "no"), ("on", "on"), ("off", "off"), ("Yes", "Yes"), ("OFF", "OFF"),
    ("y", "y"), ("n", "n"),
    # YAML 1.1 dates and timestamps
    ("2024-01-31", "2024-01-31"), ("2024-01-31 12:00:00", "2024-01-31 12:00:00"),
    # quoted: always text
    ('"2:00:00"', "2:00:00"), ("'010'", "010"), ('"90"', "90"), ('"true"', "true"),
    # plain numbers, booleans and null are still what they look like
    ("90", 90), ("0", 0), ("-3", -3), ("7200", 7200), ("0.5", 0.5), ("3.1", 3.1), ("1.0", 1.0),
    ("1e-05", 1e-05), ("1.0e-05", 1e-05),
    ("true", True), ("false", False), ("True", True), ("FALSE", False),
    ("null", None), ("~", None),
]
IDS = [w for w, _ in VALUES]


def write(path, text):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.mark.parametrize("written,expected", VALUES, ids=IDS)
def test_a_profile_value_is_what_the_site_wrote(tmp_path, written, expected):
    path = write(tmp_path / "site.yaml", f"extends: slurm\ncluster:\n  queue: {written}\n")
    value = profiles.load(str(path)).cluster["queue"]
    assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("written,expected", VALUES, ids=IDS)
def test_a_set_value_is_what_the_user_typed(written, expected):
    value = profiles.load("slurm", [f"cluster.queue={written}"]).cluster["queue"]
    assert value == expected and type(value) is type(expected)
    flow = profiles.load("slurm", [f"cluster.job_extra_directives=[{written}]"]).cluster["job_extra_directives"]
    assert flow == [expected] and type(flow[0]) is type(expected)


@pytest.mark.parametrize("written,expected", VALUES, ids=IDS)
def test_a_batch_value_is_what_its_author_wrote(tmp_path, written, expected):
    path = write(tmp_path / "batch.yaml", f"wrapper: x\ndefaults: {{a: {written}}}\ntasks:\n  - {{b: {written}}}\n")
    data = batch._read(path)
    for value in (data["defaults"]["a"], data["tasks"][0]["b"]):
        assert value == expected and type(value) is type(expected)


@pytest.mark.parametrize("written,expected", [(w, e) for w, e in VALUES if e is not None],
                         ids=[w for w, e in VALUES if e is not None])
def test_an_environment_value_reaches_the_worker_as_written(tmp_path, written, expected):
    """Environment values are strings: the text the site wrote, `True` and `5` included."""
    text = written[1:-1] if written[:1] in "'\"" else written
    path = write(tmp_path / "site.yaml", f"extends: local\nenvironment:\n  V: {written}\n")
    assert profiles.load(str(path)).environment["V"] == text
    assert profiles.load("local", [f"environment.V={written}"]).environment["V"] == text
    assert profiles.load("local", [f"environment={{V: {written}}}"]).environment["V"] == text


def test_json_batch_numbers_are_json_numbers(tmp_path):
    path = tmp_path / "batch.json"
    path.write_text(json.dumps({"wrapper": "x", "tasks": [{"a": 3.1, "b": "3.10", "c": 1e3, "d": "2:00:00"}]}))
    assert batch._read(path)["tasks"] == [{"a": 3.1, "b": "3.10", "c": 1000.0, "d": "2:00:00"}]


def test_a_number_written_as_text_where_a_number_is_expected_says_so(tmp_path):
    """010 is no longer read as 8: the schema says what it expected and how to write it."""
    with pytest.raises(ProfileError) as info:
        profiles.load("local", ["scaling.workers=010"])
    assert "scaling.workers: expected integer, got str '010'" in str(info.value)
    assert "numbers are read only in plain decimal: write 10" in str(info.value)


def test_mapping_keys_are_text(tmp_path):
    path = write(tmp_path / "batch.yaml", "wrapper: x\ntasks:\n  - {1: a, true: b, null: c, 010: d}\n")
    assert list(batch._read(path)["tasks"][0]) == ["1", "true", "null", "010"]


def test_merge_keys_still_merge_and_the_own_key_wins(tmp_path):
    path = write(tmp_path / "batch.yaml", """\
        wrapper: x
        defaults: &common {grid_epc: m.epc, depth: 2:00}
        tasks:
          - {<<: *common, depth: 3}
          - <<: *common
        """)
    tasks = batch._read(path)["tasks"]
    assert tasks == [{"grid_epc": "m.epc", "depth": 3}, {"grid_epc": "m.epc", "depth": "2:00"}]


def test_a_utf8_byte_order_mark_is_accepted(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_bytes(codecs.BOM_UTF8 + "extends: local\ndescription: café\n".encode())
    assert profiles.load(str(path)).data["description"] == "café"


# --------------------------------------------------------------------------- limits of the reader

def _nested(levels: int) -> str:
    return "[" * levels + "]" * levels


def test_nesting_up_to_the_limit_reads_and_one_more_is_refused():
    inner = datafile.MAX_DEPTH - 1                      # lists inside the top-level mapping
    assert datafile.loads_yaml(f"a: {_nested(inner)}")["a"] is not None
    assert datafile.loads_json(f'{{"a": {_nested(inner)}}}')["a"] is not None
    with pytest.raises(datafile.DataError, match=f"nested more than {datafile.MAX_DEPTH} levels deep"):
        datafile.loads_yaml(f"a: {_nested(inner + 1)}")
    with pytest.raises(datafile.DataError, match=f"nested more than {datafile.MAX_DEPTH} levels deep"):
        datafile.loads_json(f'{{"a": {_nested(inner + 1)}}}')


def test_nesting_through_aliases_counts():
    half = datafile.MAX_DEPTH // 2 + 5
    text = f"a: &a {'[' * half}1{']' * half}\nb: {'[' * half}*a{']' * half}\n"
    with pytest.raises(datafile.DataError, match="levels deep \\(through aliases\\)"):
        datafile.loads_yaml(text)


def _laughs(levels: int) -> str:
    lines = ["a0: &a0 [lol, lol, lol, lol, lol, lol, lol, lol, lol, lol]"]
    for i in range(1, levels):
        lines.append(f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]")
    return "\n".join(lines) + "\n"


def test_aliases_that_share_values_read_and_an_alias_bomb_is_refused():
    shared = datafile.loads_yaml(_laughs(4))           # 10**4 values: a legitimate amount of sharing
    assert len(shared["a3"]) == 10 and shared["a3"][0][0][0] == shared["a0"]
    with pytest.raises(datafile.DataError, match=r"aliases expand its \d+ written values to [\d,]+, more than"):
        datafile.loads_yaml(_laughs(9))                 # "billion laughs": 10**9 values from 100


# --------------------------------------------------------------------------- bad files, end to end

def _deep_yaml(key_line: str) -> str:
    return key_line + " " + _nested(5000) + "\n"


LAUGHS = _laughs(9)

# (id, file name, content: bytes, fragments of the error line)
PROFILE_CASES = [
    ("latin-1", "site.yaml", "extends: local\ndescription: café\n".encode("latin-1"),
     ["line 2 column 17", "not UTF-8 text (byte 0xe9)"]),
    ("utf-16", "site.yaml", "extends: local\n".encode("utf-16"), ["UTF-16 or UTF-32 text"]),
    ("deep", "site.yaml", _deep_yaml("extends: local\ncluster:\n  x:").encode(), ["nested more than 100 levels deep"]),
    ("alias bomb", "site.yaml", ("extends: local\ndescription: x\nx-" + LAUGHS.replace("\na", "\nx-a")).encode(),
     ["aliases expand"]),
    ("recursive alias", "site.yaml", b"extends: local\ncluster:\n  scheduler_options: &s {x: *s}\n",
     ["refers to the value that contains it"]),
    ("duplicate key", "site.yaml", b"extends: slurm\ncluster:\n  walltime: 01:00:00\n  queue: a\n  walltime: 2:00:00\n",
     ["line 5 column 3", "duplicate key 'walltime' (also on line 3)"]),
    ("python tag", "site.yaml", b"extends: local\ndescription: !!python/object/apply:os.system [true]\n",
     ["line 2 column 14", "tag !!python/object/apply:os.system is not supported"]),
    ("control character", "site.yaml", b"extends: local\ndescription: a\x00b\n", ["line 2 column 15", "U+0000"]),
    ("list as key", "site.yaml", b"extends: local\n? [a, b]\n: c\n", ["line 2 column 3", "a key must be text"]),
]


@pytest.mark.parametrize("case", PROFILE_CASES, ids=[c[0] for c in PROFILE_CASES])
def test_a_bad_profile_file_is_one_line_and_exit_4(tmp_path, example, case):
    _, name, content, fragments = case
    path = tmp_path / name
    path.write_bytes(content)
    for args in (["profiles", "show", path],
                 ["launch", "--profile", path, "--batch", example["batch"], "--output", tmp_path / "o.epc"]):
        proc = run_resqmp(*args)
        assert proc.returncode == ExitCode.PROFILE, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith(f"resqmp: error: profile {path}: "), proc.stderr
        for fragment in fragments:
            assert fragment in lines[0]
    assert not (tmp_path / "o.epc").exists()


BATCH_CASES = [
    ("latin-1", "b.yaml", "wrapper: x\ntasks: [{name: café}]\n".encode("latin-1"),
     ["line 2 column 19", "not UTF-8 text (byte 0xe9)"]),
    ("latin-1 json", "b.json", '{"wrapper": "x", "tasks": [{"name": "café"}]}'.encode("latin-1"),
     ["line 1 column 41", "not UTF-8 text"]),
    ("deep", "b.yaml", _deep_yaml("wrapper: x\ntasks:\n  - a:").encode(), ["nested more than 100 levels deep"]),
    ("deep json", "b.json", ('{"wrapper": "x", "tasks": [{"a": ' + _nested(5000) + "}]}").encode(),
     ["nested more than 100 levels deep"]),
    ("alias bomb", "b.yaml", ("wrapper: x\ndefaults:\n" + textwrap.indent(LAUGHS, "  ") + "tasks: [{a: *a8}]\n").encode(),
     ["aliases expand"]),
    ("duplicate key", "b.yaml", b"wrapper: x\ntasks:\n  - {surface_uuid: a, name: f, surface_uuid: b}\n",
     ["line 3 column 32", "duplicate key 'surface_uuid' (also on line 3)"]),
    ("duplicate key json", "b.json", b'{"wrapper": "x", "tasks": [{"a": 1, "a": 2}]}', ["duplicate key 'a'"]),
    ("utf-16 json", "b.json", '{"wrapper": "x"}'.encode("utf-16"), ["UTF-16 or UTF-32 text"]),
    ("huge integer", "b.json", b'{"wrapper": "x", "tasks": [{"a": ' + b"9" * 5000 + b"}]}", ["4300 digits"]),
]


@pytest.mark.parametrize("case", BATCH_CASES, ids=[c[0] for c in BATCH_CASES])
def test_a_bad_batch_file_is_one_line_and_exit_5(tmp_path, case):
    _, name, content, fragments = case
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(BatchError) as info:
        batch._read(path)
    for fragment in fragments:
        assert fragment in str(info.value)
    proc = run_resqmp("launch", "--profile", "local", "--batch", path, "--output", tmp_path / "o.epc")
    assert proc.returncode == ExitCode.BATCH, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"resqmp: error: batch file {path}: "), proc.stderr
    for fragment in fragments:
        assert fragment in lines[0]
    assert not (tmp_path / "o.epc").exists()


SET_CASES = [
    ("deep", f"cluster.scheduler_options={_nested(5000)}", ["nested more than 100 levels deep"]),
    ("duplicate key", "cluster.scheduler_options={a: 1, a: 2}", ["duplicate key 'a'"]),
    ("syntax", "cluster.job_extra_directives=[a, b", ["YAML syntax error"]),
    ("tag", "cluster.queue=!!timestamp 2024-01-31", ["tag !!timestamp is not supported"]),
]


@pytest.mark.parametrize("case", SET_CASES, ids=[c[0] for c in SET_CASES])
def test_a_bad_set_value_is_one_line_and_exit_4(case):
    _, item, fragments = case
    proc = run_resqmp("profiles", "show", "slurm", "--set", item)
    assert proc.returncode == ExitCode.PROFILE, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("resqmp: error: --set 'cluster."), proc.stderr
    assert len(lines[0]) < 300                          # a 10000-character value is not echoed whole
    for fragment in fragments:
        assert fragment in lines[0]


def test_profiles_list_survives_a_broken_file_and_names_it(tmp_path):
    folder = tmp_path / "profiles"
    write(folder / "good.yaml", "extends: local\n")
    (folder / "latin.yaml").write_bytes("extends: local\ndescription: café\n".encode("latin-1"))
    (folder / "deep.yaml").write_bytes(_deep_yaml("extends: local\ncluster:\n  x:").encode())
    proc = run_resqmp("profiles", "list", env={"RESQMP_PROFILE_PATH": str(folder)})
    assert proc.returncode == 0, proc.stderr
    rows = {line.split()[0]: line.split()[1] for line in proc.stdout.splitlines()[1:]}
    assert rows["good"] == "local" and rows["local"] == "local"
    assert rows["latin"] == "INVALID" and rows["deep"] == "INVALID"
    deep, latin = sorted(proc.stderr.strip().splitlines())
    assert deep.startswith(f"resqmp: warning: profile {folder / 'deep.yaml'}: line 3 ")
    assert deep.endswith(": nested more than 100 levels deep")
    assert latin == (f"resqmp: warning: profile {folder / 'latin.yaml'}: line 2 column 17: not UTF-8 text "
                     f"(byte 0xe9); resqmp reads UTF-8: save the file as UTF-8")


@pytest.mark.parametrize("written,expected", VALUES, ids=IDS)
def test_a_resqmp_batch_set_value_is_what_the_user_typed(written, expected):
    """`resqmp batch ... --set KEY=VALUE` writes the value into the batch's defaults: read with the
    same rules as every other --set, and written so that `launch` reads it back unchanged."""
    from resqmp import batch_writer
    value = batch_writer.parse_sets([f"k={written}"])["k"]
    assert value == expected and type(value) is type(expected)
