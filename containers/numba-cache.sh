# Sourced (POSIX sh) by the image entrypoint and by Apptainer's %environment.
#
# Makes NUMBA_CACHE_DIR a *writable* folder holding the numba cache pre-compiled into the image.
# numba only uses a cache folder it can write to: its locators try NUMBA_CACHE_DIR, then
# __pycache__ beside the source, then ~/.cache/numba, each only if a test file can be created
# there (numba/core/caching.py, ensure_cache_path); with none writable, a cache=True function
# fails with "no locator available". So on a read-only root (Kubernetes readOnlyRootFilesystem,
# an Apptainer SIF) the pre-compiled cache cannot be used in place: it is copied to a writable
# fallback (an emptyDir at /tmp in the pods) before any worker interpreter starts. The copy is
# ~0.5 MB and takes milliseconds; loading from it saves the 5-8 s JIT of the find-faces path.
#
#   RESQMP_NUMBA_SEED            the pre-compiled cache in the image (/opt/resqmp/numba-cache)
#   NUMBA_CACHE_DIR              wanted cache folder; used as is when writable
#   RESQMP_NUMBA_CACHE_FALLBACK  writable folder used otherwise
#                                (default ${TMPDIR:-/tmp}/resqmp-numba-cache-<uid>)
# If no folder is writable, RESQPY_NUMBA_CACHE is set to false (numba JITs in memory, slower
# first task, but no crash).

_resqmp_seed="${RESQMP_NUMBA_SEED:-/opt/resqmp/numba-cache}"

_resqmp_writable() {
    mkdir -p "$1" 2>/dev/null || return 1
    _resqmp_probe="$1/.resqmp-probe.$$"
    ( : > "$_resqmp_probe" ) 2>/dev/null || return 1
    rm -f "$_resqmp_probe"
}

# Copy the seed's files into $1 without ever exposing a half-written file: each file is copied
# into a private folder first and renamed into place (rename is atomic on one filesystem), so
# several workers starting on one node may seed the same folder at once.
_resqmp_seed_into() {
    [ -d "$_resqmp_seed" ] || return 0
    [ -e "$1/.resqmp-seeded" ] && return 0
    _resqmp_tmp="$(mktemp -d "$1/.seeding.XXXXXX")" || return 1
    if cp -R "$_resqmp_seed/." "$_resqmp_tmp/" 2>/dev/null; then
        (cd "$_resqmp_tmp" && find . -type f ! -name '.resqmp-*') | while IFS= read -r _f; do
            mkdir -p "$1/$(dirname "$_f")" && { [ -e "$1/$_f" ] || mv -f "$_resqmp_tmp/$_f" "$1/$_f"; }
        done
        : > "$1/.resqmp-seeded"
    fi
    rm -rf "$_resqmp_tmp"
}

_resqmp_target="${NUMBA_CACHE_DIR:-$_resqmp_seed}"
if ! _resqmp_writable "$_resqmp_target"; then
    _resqmp_target="${RESQMP_NUMBA_CACHE_FALLBACK:-${TMPDIR:-/tmp}/resqmp-numba-cache-$(id -u)}"
    if ! _resqmp_writable "$_resqmp_target"; then
        echo "resqmp: no writable numba cache folder (tried ${NUMBA_CACHE_DIR:-$_resqmp_seed} and $_resqmp_target);" \
             "numba functions will be compiled in memory (RESQPY_NUMBA_CACHE=false)" >&2
        _resqmp_target=""
        RESQPY_NUMBA_CACHE=false
        export RESQPY_NUMBA_CACHE
    fi
fi
if [ -n "$_resqmp_target" ]; then
    if [ "$_resqmp_target" != "$_resqmp_seed" ]; then
        _resqmp_seed_into "$_resqmp_target" || echo "resqmp: could not seed numba cache $_resqmp_target" >&2
    fi
    NUMBA_CACHE_DIR="$_resqmp_target"
    export NUMBA_CACHE_DIR
fi
unset _resqmp_seed _resqmp_target _resqmp_probe _resqmp_tmp _resqmp_f
unset -f _resqmp_writable _resqmp_seed_into 2>/dev/null || true
