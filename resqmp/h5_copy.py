"""HDF5 arrays of copied parts: resqpy's ``copy_h5_path_list``, through files kept open.

resqpy opens the output and the input HDF5 file once per copied part, and asks ``path in file``
(slow in write mode with HDF5 2.0) for every dataset. Here the output file stays open for the
whole recombination (nothing else writes it meanwhile), its paths are known from one visit, and
one input file is open per task. The datasets written are the same: plain contiguous numeric
datasets are copied as stored (H5Ocopy), which is what ``create_dataset(data=...)`` rebuilds.
"""
from __future__ import annotations

import logging
from collections import Counter

import h5py

import resqpy.olio.write_hdf5 as whdf5

log = logging.getLogger(__name__)

_COPY_PLAIN = h5py.h5p.create(h5py.h5p.OBJECT_COPY)
_COPY_PLAIN.set_copy_object(h5py.h5o.COPY_WITHOUT_ATTR_FLAG)
_PLAIN_CLASSES = (h5py.h5t.INTEGER, h5py.h5t.FLOAT)
# what h5py's Group.create_group passes for an ASCII name (no creation order, no timestamps)
_GROUP_LINK = h5py._hl.base.default_lcpl().copy()
_GROUP_LINK.set_char_encoding(h5py.h5t.CSET_ASCII)
_GROUP_CREATE = h5py.h5p.create(h5py.h5p.GROUP_CREATE)
_GROUP_CREATE.set_obj_track_times(False)


class MissingDataset(KeyError):
    """check_input: a path that names no dataset the input file can open (`path`, `why`)."""

    def __init__(self, path: str, why: str):
        super().__init__(path)
        self.path, self.why = path, why


class H5Copier:
    """Copies datasets from task HDF5 files into one output HDF5 file."""

    def __init__(self):
        self._out = None
        self._out_name = None
        self._in = None
        self._in_name = None
        self._out_paths: set[str] = set()      # what the output holds, as h5py's visit() names it
        self._groups: set[str] = set()         # group paths, as copy_paths builds them, known to be there
        self.datasets = 0                      # datasets copied so far
        self.groups = 0                        # of which in groups copied whole (copy_groups)
        self.plain: set[str] | None = None     # when a set: output keys copied as stored (plain datasets)
        self.added: list[str] | None = None    # when a list: every output key made since (undo)
        self.copying = ''                      # the input path or group being copied (for errors)

    def copy_paths(self, file_in: str, file_out: str, paths: list[str], plain: set[str] | frozenset = frozenset()) -> int:
        """resqpy's copy_h5_path_list(file_in, file_out, paths, mode='a'), same datasets written;
        returns how many were copied (a path already present is skipped with a warning). `plain`:
        keys of datasets in file_in known to be plain (a group partial's, copied there as stored):
        copied as stored without opening them to check again."""
        assert file_out != file_in, 'identical input and output files specified for hdf5 copy'
        assert paths is not None
        chunks = whdf5.global_default_chunks
        compression = whdf5.global_default_compression
        if compression is not None and chunks is None:
            chunks = 'auto'
        fp_out = self._out_file(file_out)
        if not paths:
            return 0
        fp_in = self._in_file(file_in)
        existing = self._out_paths
        count = 0
        for path in paths:
            self.copying = path
            key = _h5_key(path)
            if key in existing:
                log.warning(f'not copying hdf5 data due to pre-existence for: {path}')
                continue
            source = None
            if chunks is None or chunks == 'none':
                source = path.encode() if key in plain else _plain_dataset(fp_in, path)
            if source is None:
                assert path in fp_in, f'internal path {path} not found in hdf5 file {file_in}'
            group_list = list(path.split(sep='/'))
            assert len(group_list) > 1, f'no hdf5 group(s) in internal path {path}'
            build = self._groups_above(fp_out, [w for w in group_list[:-1] if w]) + '/' + group_list[-1]
            if source is not None:
                # a contiguous, unfiltered numeric dataset: copied as stored, which is what
                # create_dataset(data=...) rebuilds (same type, shape, layout, no attributes)
                h5py.h5o.copy(fp_in.id, source, fp_out.id, build.encode(), copypl=_COPY_PLAIN)
                if self.plain is not None:
                    self.plain.add(key)
            elif chunks is None or chunks == 'none':
                fp_out.create_dataset(build, data=fp_in[path])
            elif compression is None or compression == 'none':
                fp_out.create_dataset(build, data=fp_in[path], chunks=True)
            else:
                fp_out.create_dataset(build, data=fp_in[path], chunks=True, compression=compression)
            existing.add(key)
            if self.added is not None:
                self.added.append(key)
            count += 1
        self.datasets += count
        return count

    def copy_groups(self, file_in: str, file_out: str, groups: dict[str, list[str]]) -> int:
        """Copy each group of file_in whole (one H5Ocopy: its datasets, as stored, and the groups
        between), as copy_paths would copy its datasets one by one; `groups`: group path -> the
        paths of the datasets it holds, which the caller checked are all it holds (H5Tree.holds_only)
        and plain. Returns how many datasets were copied. A group the output holds already
        is the caller's error (ValueError, nothing copied): copy_paths adds to a group, this cannot."""
        assert file_out != file_in, 'identical input and output files specified for hdf5 copy'
        fp_out = self._out_file(file_out)
        if not groups:
            return 0
        fp_in = self._in_file(file_in)
        existing = self._out_paths
        keys = {group: _h5_key(group) for group in groups}
        if any(key in existing for key in keys.values()):
            raise ValueError(f'HDF5 group(s) already in {file_out}: {sorted(k for k in keys.values() if k in existing)}')
        count = 0
        for group, paths in groups.items():
            parts = [w for w in group.split('/') if w]
            build = self._groups_above(fp_out, parts[:-1]) + '/' + parts[-1]
            self.copying = group
            h5py.h5o.copy(fp_in.id, group.encode(), fp_out.id, build.encode(), copypl=_COPY_PLAIN)
            if self.added is not None:
                self.added.append(keys[group])      # its datasets and groups go with it
            for path in paths:          # what it brought: its datasets and the groups on their way
                key = _h5_key(path)
                existing.add(key)
                if self.plain is not None:
                    self.plain.add(key)
                i = key.rfind('/')
                while i > 0 and key[:i] not in existing:
                    existing.add(key[:i])
                    i = key.rfind('/', 0, i)
            existing.add(keys[group])
            count += len(paths)
            self.groups += 1
        self.datasets += count
        return count

    def _groups_above(self, fp_out, names: list[str]) -> str:
        """The groups /names[0]/names[1]/... in the output, made where missing; their path."""
        build = ''
        existing = self._out_paths
        for w in names:
            build += '/' + w
            if build not in self._groups:      # made or found before: no key to compute
                if _h5_key(build) not in existing:
                    _create_group(fp_out, build)
                    existing.add(_h5_key(build))
                    if self.added is not None:
                        self.added.append(_h5_key(build))
                self._groups.add(build)
        return build

    def undo(self, added: list[str]) -> None:
        """Remove from the output what `added` (the keys self.added collected) made: the highest
        of them unlinked (what lies under goes with it), all forgotten. Its space in the file stays
        unused (HDF5 does not give it back); nothing the file names is left of it."""
        made = set(added)
        removed = set()
        for key in added:
            i = key.rfind('/')
            if i > 0 and key[:i] in made:
                continue                    # goes with the group above it
            if key in self._out_paths:
                self._out.id.unlink(key.encode())
                removed.add(key)
        prefixes = tuple(k + '/' for k in removed)
        for key in [k for k in self._out_paths if isinstance(k, str) and (k in removed or k.startswith(prefixes))]:
            self._out_paths.discard(key)
            self._groups.discard('/' + key)
            if self.plain is not None:
                self.plain.discard(key)

    @staticmethod
    def copies_as_stored() -> bool:
        """Are plain datasets copied as stored (resqpy's default: no chunking asked for)? Only
        then is a group copy what copy_paths would do."""
        chunks = whdf5.global_default_chunks
        if whdf5.global_default_compression is not None and chunks is None:
            chunks = 'auto'
        return chunks is None or chunks == 'none'

    def check_input(self, file_in: str, paths) -> set[str]:
        """Open file_in, the input the next copy_paths calls read, and check that each of `paths`
        names a dataset there; returns the keys of the plain ones (copy_paths' `plain`). Raises
        OSError when the file cannot be opened (not HDF5, cut short: HDF5 compares the end of file
        its superblock records with the file's size), MissingDataset for the first path that
        names no dataset. The file stays open (_in_file): the copy reads through this handle, and
        each dataset is opened here once instead of there (_plain_dataset), so a check before a
        copy costs that copy little more."""
        fp_in = self._in_file(file_in)
        plain = set()
        for path in paths:
            try:
                dsid = h5py.h5d.open(fp_in.id, path.encode())
            except (KeyError, ValueError, TypeError, RuntimeError, OSError) as e:
                raise MissingDataset(path, str(e.args[0]) if len(e.args) == 1 else str(e)) from None
            try:
                if _is_plain(dsid):
                    plain.add(_h5_key(path))
            finally:
                dsid.close()
        return plain

    def out_paths(self, file_out: str) -> set[str]:
        """What the output file `file_out` holds (h5py's visit() names), the file opened if not yet."""
        self._out_file(file_out)
        return self._out_paths

    @property
    def held(self) -> set[str]:
        """What the output file holds, as known since this copier opened it (nothing before)."""
        return self._out_paths

    def close_input(self) -> None:
        if self._in is not None:
            self._in.close()
            self._in = None
            self._in_name = None

    def close(self) -> None:
        """Close both files (before the model stores or reads its own HDF5 file)."""
        self.close_input()
        if self._out is not None:
            self._out.close()
            self._out = None
            self._out_name = None
            self._out_paths, self._groups = set(), set()    # read again from the file if it reopens

    def _out_file(self, name: str):
        if self._out is not None and self._out_name != name:
            self._out.close()
            self._out = None
        if self._out is None:
            self._out = h5py.File(name, 'a')
            self._out_name = name
            # what the file holds: the output is written only through this handle from now on
            self._out_paths = set()
            self._groups = set()
            visit = getattr(self._out, 'visit_links', self._out.visit)   # links count as present
            visit(self._out_paths.add)
        return self._out

    def _in_file(self, name: str):
        if self._in is not None and self._in_name != name:
            self.close_input()
        if self._in is None:
            self._in = h5py.File(name, 'r')
            self._in_name = name
        return self._in


class H5Tree:
    """The names an HDF5 file holds (h5py's visit() form), how many lie under each group, and which
    are datasets: enough to tell, without opening anything, whether a name is a dataset a copy
    reads, and whether a group holds only given datasets (so one copy of the group copies exactly
    those)."""

    def __init__(self, names, datasets=None):
        """`datasets`: the names that are datasets, each by a hard link (None: every name no other
        lies under, as in a file written by H5Copier, which makes nothing else)."""
        self.names = set(names)
        self.under: Counter = Counter()
        for name in self.names:
            i = name.rfind('/')
            while i > 0:
                self.under[name[:i]] += 1
                i = name.rfind('/', 0, i)
        self.datasets = {n for n in self.names if n not in self.under} if datasets is None else set(datasets)

    @classmethod
    def of_file(cls, fp) -> "H5Tree":
        """The tree of the open h5py File `fp`: every link counts as a name (soft and external ones
        too: what a copy of a group would bring), and only objects that are datasets reached by a
        hard link as datasets (H5Ovisit: each object once, by the first name it is found by). A link,
        an empty group or a second name of a dataset is therefore no dataset here: a copy of it
        would not be what copy_paths makes of a dataset. Names that are no UTF-8 are kept, decoded
        with surrogates (no path of a plan, which is encoded strictly, can name them)."""
        names, datasets = [], []
        fp.id.links.visit(names.append)
        dataset = h5py.h5o.TYPE_DATASET

        def visit(name, info):
            if info.type == dataset:
                datasets.append(name)
        h5py.h5o.visit(fp.id, visit, info=True)
        return cls(map(_decoded, names), map(_decoded, datasets))

    def is_dataset(self, path: str) -> bool:
        """Does `path` name a dataset by a hard link (its own, not another name of it)?"""
        return _h5_key(path) in self.datasets

    def holds_only(self, group: str, paths) -> bool:
        """Does `group` hold the datasets `paths` (all of them under it), the groups leading to
        them, and nothing else (no link, no empty group)?"""
        key = _h5_key(group)
        if not key:
            return False
        prefix = key + '/'
        expected = set()
        for path in paths:
            k = _h5_key(path)
            if not k.startswith(prefix) or k not in self.datasets:
                return False
            expected.add(k)
            i = k.rfind('/')
            while i > len(key):
                expected.add(k[:i])
                i = k.rfind('/', 0, i)
        return bool(expected) and self.under.get(key, 0) == len(expected)


def _decoded(name: bytes) -> str:
    """An HDF5 name as h5py gives it (UTF-8), one that is not UTF-8 with surrogates for its bytes."""
    try:
        return name.decode()
    except UnicodeDecodeError:
        return name.decode(errors='surrogateescape')


def whole_groups(paths: list[str], tree: H5Tree, plain) -> dict[str, list[str]]:
    """The groups of `tree`'s file that hold only some of `paths` (datasets, all plain: in
    `plain`, by key), each the highest such above its datasets: group path -> its paths, in the
    order of `paths`. Copying those groups whole and the other paths one by one copies `paths`."""
    keys = [_h5_key(p) for p in paths]
    groups: dict[str, list[str]] = {}
    covered: set[str] = set()
    for key in keys:
        if key in covered or key not in plain:
            continue
        parts = key.split('/')
        for depth in range(1, len(parts)):
            prefix = '/'.join(parts[:depth]) + '/'
            mine = [p for p, k in zip(paths, keys) if k.startswith(prefix)]
            if all(_h5_key(p) in plain and _h5_key(p) not in covered for p in mine) \
                    and tree.holds_only(prefix[:-1], mine):
                groups['/' + prefix[:-1]] = mine
                covered.update(_h5_key(p) for p in mine)
                break
    return groups


def _create_group(fp_out, name: str) -> None:
    """fp_out.create_group(name), without building h5py's Group object and property lists."""
    if not name.isascii() or h5py.get_config().track_order:
        fp_out.create_group(name)
        return
    h5py.h5g.create(fp_out.id, name.encode(), lcpl=_GROUP_LINK, gcpl=_GROUP_CREATE).close()


def _h5_key(path: str) -> str:
    """An HDF5 path as h5py's visit() names it: no leading slash, no empty components."""
    return '/'.join(w for w in path.split('/') if w)


def _plain_dataset(fp_in, path):
    """path (bytes) if it names a contiguous, unfiltered integer/float dataset in fp_in, else None."""
    name = path.encode()
    try:
        dsid = h5py.h5d.open(fp_in.id, name)
    except (KeyError, ValueError, TypeError):
        return None
    try:
        return name if _is_plain(dsid) else None
    finally:
        dsid.close()


def _is_plain(dsid) -> bool:
    """Is the open dataset contiguous, unfiltered, of integers or floats (copied as stored)?"""
    if dsid.get_type().get_class() not in _PLAIN_CLASSES:
        return False
    dcpl = dsid.get_create_plist()
    return dcpl.get_layout() == h5py.h5d.CONTIGUOUS and not dcpl.get_nfilters()
