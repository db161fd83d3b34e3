"""How resqmp reads the data files it is given: profiles, `--set` values and batch files.

PyYAML's safe_load reads YAML 1.1, which turns text a site writes into values it never meant:
`2:00:00` becomes 7200 (base 60: a walltime of five days for SLURM), `010` becomes 8 (octal),
`3.10` becomes 3.1, `yes`/`off` become booleans, `2024-01-31` a date. Every data file goes
through this module instead, with one set of rules (close to YAML 1.2's core schema):

* null: nothing, `~`, `null` (`Null`, `NULL`);
* booleans: `true`, `false` (`True`, `TRUE`, `False`, `FALSE`); `yes`, `no`, `on`, `off` are text;
* integers: plain decimal, no leading zero, no `+`, no `_` (`0`, `42`, `-3`);
* floats: decimal with a point or an exponent, written the way Python or YAML write that number
  back (`0.5`, `2.25`, `1e-05`, `1.0e-05`): a number's text must round-trip, so `3.10`, `1.50`,
  `1e3` stay text rather than silently become 3.1, 1.5, 1000.0;
* everything else is text, exactly as written: `2:00:00`, `1:30`, `010`, `0x1F`, `1_000`,
  `2024-01-31`, `.inf`;
* mapping keys are always text (as in JSON); a key given twice in one mapping is an error;
* explicit tags `!!str`, `!!int`, `!!float`, `!!bool`, `!!null`, `!!seq`, `!!map` are honoured
  (`!!int 010` is 10), other tags are errors; YAML 1.1's `<<` merge key still merges mappings;
* the caller may name key paths whose scalars are always text (`text_under`): a profile's
  `environment:` values reach the worker exactly as written, `True` included.

JSON (batch files named *.json) keeps JSON's own types: its numbers are numbers; keys given twice,
nesting and encoding are checked as for YAML.

Limits, so that a broken or hostile file gives one line instead of a traceback or a hung
launcher: UTF-8 text (a byte-order mark is allowed); at most MAX_DEPTH levels of nesting, also
counted through aliases; aliases may expand a document to at most
max(MAX_EXPANDED, EXPANSION x its written values) values (a "billion laughs" file has a few dozen
values that expand to 10**9); an alias may not refer to the value that contains it.

Errors are DataError: str() is "line L column C: what is wrong"; callers put the file (or the
`--set`) in front and raise their own error class (profile: exit 4, batch: exit 5).
"""
from __future__ import annotations

import codecs
import json
import re
from pathlib import Path
from typing import Any, Iterable, Iterator

import yaml
from yaml.composer import Composer
from yaml.constructor import SafeConstructor
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode
from yaml.parser import Parser
from yaml.reader import Reader
from yaml.resolver import BaseResolver
from yaml.scanner import Scanner

MAX_DEPTH = 100                 # levels of nesting; real profiles and batches use fewer than 10
MAX_EXPANDED = 1_000_000        # values aliases may expand a document to, at least ...
EXPANSION = 10                  # ... or this many times the values written in it

_PREFIX = "tag:yaml.org,2002:"
STR, INT, FLOAT, BOOL, NULL = (_PREFIX + t for t in ("str", "int", "float", "bool", "null"))
SEQ, MAP, MERGE = (_PREFIX + t for t in ("seq", "map", "merge"))

KeyPath = tuple[str, ...]


class DataError(ValueError):
    """What is wrong with a data file and where (1-based line and column, when known)."""

    def __init__(self, problem: str, line: int | None = None, column: int | None = None):
        super().__init__(problem)
        self.problem, self.line, self.column = problem, line, column

    def __str__(self) -> str:
        if self.line is None:
            return self.problem
        where = f"line {self.line}" + (f" column {self.column}" if self.column else "")
        return f"{where}: {self.problem}"


def _at(mark) -> tuple[int, int] | tuple[None, None]:
    return (mark.line + 1, mark.column + 1) if mark is not None else (None, None)


def _tag(tag: str) -> str:
    return "!!" + tag[len(_PREFIX):] if tag.startswith(_PREFIX) else tag


# --------------------------------------------------------------------------- which text is what

def _float_as_written(text: str) -> bool:
    """True when the number, written back by Python (repr) or by YAML, is this very text."""
    value = float(text)
    written = repr(value)
    as_yaml = written.replace("e", ".0e", 1) if "." not in written and "e" in written else written
    return text in (written, as_yaml)


def _int_fits(text: str) -> bool:
    try:
        int(text)               # Python refuses integers of more than 4300 digits
    except ValueError:
        return False
    return True


class _Resolver(BaseResolver):
    """Which tag a plain (unquoted, untagged) scalar gets; everything unmatched is text."""

    def resolve(self, kind, value, implicit):
        tag = super().resolve(kind, value, implicit)
        if tag == FLOAT and not _float_as_written(value):
            return STR
        if tag == INT and not _int_fits(value):
            return STR
        return tag


# BaseResolver has no implicit resolvers: these are the only ones (no timestamps, no base 60,
# no octal/hex/binary, no yes/no/on/off)
_Resolver.add_implicit_resolver(NULL, re.compile(r"^(?:~|null|Null|NULL|)$"), ["~", "n", "N", ""])
_Resolver.add_implicit_resolver(BOOL, re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF"))
_Resolver.add_implicit_resolver(INT, re.compile(r"^(?:0|-?[1-9][0-9]*)$"), list("-0123456789"))
_Resolver.add_implicit_resolver(
    FLOAT, re.compile(r"^-?(?:0|[1-9][0-9]*)(?:\.[0-9]+(?:[eE][-+]?[0-9]+)?|[eE][-+]?[0-9]+)$"),
    list("-0123456789"))
_Resolver.add_implicit_resolver(MERGE, re.compile(r"^(?:<<)$"), ["<"])


def is_number(text: str) -> bool:
    """Whether unquoted text is a number under these rules (`120`, `0.5`; not `2:00:00`, `010`)."""
    return _Resolver().resolve(ScalarNode, text, (True, False)) in (INT, FLOAT)


class _Constructor(SafeConstructor):
    """Python values from nodes; only the tags listed below (SafeConstructor would add
    timestamps, binary, sets, ordered maps)."""

    yaml_constructors: dict = {}

    def construct_mapping(self, node, deep=False):
        if not isinstance(node, MappingNode):
            raise DataError(f"expected a mapping, found {node.id}", *_at(node.start_mark))
        first: dict[str, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == MERGE:
                continue
            key = self._key(key_node)
            if key in first:
                raise DataError(f"duplicate key {key!r} (also on line {first[key]})", *_at(key_node.start_mark))
            first[key] = key_node.start_mark.line + 1
        # `<<: *base` pairs come first, so the mapping's own keys win over merged ones
        self.flatten_mapping(node)
        mapping = {}
        for key_node, value_node in node.value:
            mapping[self._key(key_node)] = self.construct_object(value_node, deep=deep)
        return mapping

    @staticmethod
    def _key(node: Node) -> str:
        if not isinstance(node, ScalarNode):
            raise DataError(f"a key must be text, not a {node.id}", *_at(node.start_mark))
        return node.value        # the text as written: `010:` is "010", `true:` is "true"

    def construct_bool(self, node):
        text = self.construct_scalar(node)
        if text in ("true", "True", "TRUE"):
            return True
        if text in ("false", "False", "FALSE"):
            return False
        raise DataError(f"!!bool {text!r}: expected true or false", *_at(node.start_mark))

    def construct_int(self, node):
        text = self.construct_scalar(node)
        if re.fullmatch(r"[-+]?[0-9]+", text) and _int_fits(text):
            return int(text, 10)
        raise DataError(f"!!int {text!r}: expected a decimal integer", *_at(node.start_mark))

    def construct_float(self, node):
        text = self.construct_scalar(node)
        if re.fullmatch(r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][-+]?[0-9]+)?", text):
            return float(text)
        raise DataError(f"!!float {text!r}: expected a decimal number", *_at(node.start_mark))

    def construct_unsupported(self, node):
        raise DataError(f"tag {_tag(node.tag)} is not supported (resqmp reads text, numbers, true/false, "
                        f"null, lists and mappings)", *_at(node.start_mark))


_Constructor.add_constructor(STR, SafeConstructor.construct_yaml_str)
_Constructor.add_constructor(NULL, SafeConstructor.construct_yaml_null)
_Constructor.add_constructor(BOOL, _Constructor.construct_bool)
_Constructor.add_constructor(INT, _Constructor.construct_int)
_Constructor.add_constructor(FLOAT, _Constructor.construct_float)
_Constructor.add_constructor(SEQ, SafeConstructor.construct_yaml_seq)
_Constructor.add_constructor(MAP, SafeConstructor.construct_yaml_map)
_Constructor.add_constructor(None, _Constructor.construct_unsupported)


class _Loader(Reader, Scanner, Parser, Composer, _Constructor, _Resolver):
    def __init__(self, text: str):
        Reader.__init__(self, text)
        Scanner.__init__(self)
        Parser.__init__(self)
        Composer.__init__(self)
        _Constructor.__init__(self)
        _Resolver.__init__(self)
        self._depth = 0

    def compose_node(self, parent, index):
        # PyYAML composes recursively: stop at MAX_DEPTH, long before Python's recursion limit
        self._depth += 1
        try:
            if self._depth > MAX_DEPTH:
                raise DataError(f"nested more than {MAX_DEPTH} levels deep", *_at(self.peek_event().start_mark))
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


# --------------------------------------------------------------------------- node graph checks

def _children(node: Node) -> list[Node]:
    if isinstance(node, MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, SequenceNode):
        return list(node.value)
    return []


def _check_shape(root: Node) -> None:
    """Depth and expanded size of the document with every alias expanded, computed on the node
    graph (aliases are shared nodes) without expanding it; an alias inside its own anchor is a
    cycle."""
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    open_: set[int] = set()
    stack: list[tuple[Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            kids = _children(node)
            size[key] = 1 + sum(size[id(k)] for k in kids)
            depth[key] = 1 + max((depth[id(k)] for k in kids), default=0)
            open_.discard(key)
            if depth[key] > MAX_DEPTH:
                raise DataError(f"nested more than {MAX_DEPTH} levels deep (through aliases)",
                                *_at(node.start_mark))
            continue
        if key in size:
            continue
        if key in open_:
            raise DataError("an alias refers to the value that contains it", *_at(node.start_mark))
        open_.add(key)
        stack.append((node, True))
        stack.extend((kid, False) for kid in _children(node))
    written = len(size)
    limit = max(MAX_EXPANDED, EXPANSION * written)
    if size[id(root)] > limit:
        raise DataError(f"aliases expand its {written:,} written values to {size[id(root)]:,}, more than the "
                        f"{limit:,} allowed", *_at(root.start_mark))


def _pairs(node: MappingNode) -> Iterator[tuple[Node, Node]]:
    """The mapping's own pairs and those it merges with `<<`."""
    for key_node, value_node in node.value:
        if key_node.tag == MERGE:
            for merged in (value_node.value if isinstance(value_node, SequenceNode) else [value_node]):
                if isinstance(merged, MappingNode):
                    yield from _pairs(merged)
        else:
            yield key_node, value_node


def _nodes_under(root: Node, at: KeyPath, path: KeyPath) -> list[Node]:
    """The nodes holding the value of key path `path`, in a document whose root is at key path `at`."""
    if at[:len(path)] == path:
        return [root]
    if path[:len(at)] != at:
        return []
    nodes = [root]
    for key in path[len(at):]:
        nodes = [v for n in nodes if isinstance(n, MappingNode)
                 for k, v in _pairs(n) if isinstance(k, ScalarNode) and k.value == key]
    return nodes


def _scalars_as_text(node: Node) -> None:
    seen: set[int] = set()
    stack = [node]
    while stack:
        n = stack.pop()
        if id(n) in seen:
            continue
        seen.add(id(n))
        if isinstance(n, ScalarNode) and n.tag in (INT, FLOAT, BOOL):
            n.tag = STR
        stack.extend(_children(n))


# --------------------------------------------------------------------------- reading

def loads_yaml(text: str, text_under: Iterable[KeyPath] = (), at: KeyPath = ()) -> Any:
    """The data of one YAML document. `at`: the key path the document's root sits at (a `--set`
    value), for `text_under`: key paths whose scalars are text."""
    try:
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
            if root is None:
                return None
            _check_shape(root)
            for path in text_under:
                for node in _nodes_under(root, tuple(at), tuple(path)):
                    _scalars_as_text(node)
            return loader.construct_document(root)
        finally:
            loader.dispose()
    except yaml.reader.ReaderError as e:
        line, column = _position(text, e.position)
        char = f"U+{e.character:04X}" if isinstance(e.character, int) else repr(e.character)
        raise DataError(f"character {char} is not allowed in YAML ({e.reason})", line, column) from None
    except yaml.constructor.ConstructorError as e:
        raise DataError(e.problem or str(e).splitlines()[0], *_at(e.problem_mark)) from None
    except yaml.MarkedYAMLError as e:
        problem = e.problem or str(e).splitlines()[0]
        if e.context and problem.startswith("but "):       # "expected a single document ..., but found another"
            problem = f"{e.context}, {problem}"
        raise DataError(f"YAML syntax error: {problem}", *_at(e.problem_mark)) from None
    except yaml.YAMLError as e:
        raise DataError(f"YAML error: {str(e).splitlines()[0]}") from None
    except RecursionError:          # not expected past MAX_DEPTH; one line rather than a traceback
        raise DataError("nested too deeply") from None


def loads_json(text: str) -> Any:
    """The data of a JSON text (JSON's own types), with duplicate keys and nesting checked."""
    def unique_keys(pairs):
        mapping = {}
        for key, value in pairs:
            if key in mapping:
                raise DataError(f"duplicate key {key!r}")
            mapping[key] = value
        return mapping

    try:
        data = json.loads(text, object_pairs_hook=unique_keys)
    except json.JSONDecodeError as e:
        raise DataError(f"JSON syntax error: {e.msg}", e.lineno, e.colno) from None
    except RecursionError:
        raise DataError(f"nested more than {MAX_DEPTH} levels deep") from None
    except DataError:
        raise
    except ValueError as e:          # e.g. an integer of more than 4300 digits
        raise DataError(f"JSON value error: {str(e).split(';')[0]}") from None
    stack = [(data, 1)]
    while stack:
        value, level = stack.pop()
        if level > MAX_DEPTH:
            raise DataError(f"nested more than {MAX_DEPTH} levels deep")
        if isinstance(value, dict):
            stack.extend((v, level + 1) for v in value.values())
        elif isinstance(value, list):
            stack.extend((v, level + 1) for v in value)
    return data


def decode(data: bytes) -> str:
    """UTF-8 text (a byte-order mark is dropped), or an error naming the first bad byte."""
    if data.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_BE)):
        raise DataError("UTF-16 or UTF-32 text (it starts with a byte-order mark); resqmp reads UTF-8: "
                        "save the file as UTF-8")
    if data.startswith(codecs.BOM_UTF8):
        data = data[len(codecs.BOM_UTF8):]
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        column = e.start - (data.rfind(b"\n", 0, e.start) + 1) + 1
        raise DataError(f"not UTF-8 text (byte 0x{data[e.start]:02x}); resqmp reads UTF-8: save the file "
                        f"as UTF-8", line, column) from None


def read_file(path: Path, text_under: Iterable[KeyPath] = ()) -> Any:
    """The data in a YAML file, or in a JSON file when its name ends in .json."""
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise DataError(f"cannot read ({e.strerror})") from None
    text = decode(data)
    if Path(path).suffix.lower() == ".json":
        return loads_json(text)
    return loads_yaml(text, text_under=text_under)


def _position(text: str, index: int) -> tuple[int, int]:
    line = text.count("\n", 0, index) + 1
    return line, index - (text.rfind("\n", 0, index) + 1) + 1
