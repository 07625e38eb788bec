"""SmartModules written in WAT for tests, compiled at test time with wasmtime.wat2wasm.

Two kinds:
- rillet's six example modules (tests/wat/*.wat: a shared prelude with Fluvio's SmartModule ABI,
  then one body per module), which behave as Fluvio's example modules of the same names
  (tests/integration/test_smartmodule_examples.py compares them byte for byte with Fluvio's
  compiled ones when a snapshot of fluvio-client-python is at hand): :func:`example`,
  :func:`example_wasm`;
- tiny ones that misbehave in one way each (:func:`wat_module`). Their ``filter`` hands back an
  empty SmartModuleOutput (no records, no error: five zero bytes at address 0) unless its body
  traps or never returns first."""

from __future__ import annotations

import atexit
import functools
import shutil
import tempfile
from pathlib import Path

WAT_DIR = Path(__file__).parent / "wat"

_TEMPLATE = """
(module
  (import "env" "copy_records" (func $copy (param i32 i32)))
  %(imports)s
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (data (i32.const 0) "\\00\\00\\00\\00\\00")
  (func (export "alloc") (param $n i32) (result i32)
    (local $p i32)
    (local.set $p (global.get $heap))
    (global.set $heap (i32.add (global.get $heap) (local.get $n)))
    (block $done
      (loop $more
        (br_if $done (i32.le_u (global.get $heap) (i32.mul (memory.size) (i32.const 65536))))
        (if (i32.eq (memory.grow (i32.const 1)) (i32.const -1)) (then unreachable))
        (br $more)))
    (local.get $p))
  (func (export "dealloc") (param i32 i32))
  (func (export "%(export)s") (param $ptr i32) (param $len i32) (param $version i32) (result i32)
    %(body)s
    (call $copy (i32.const 0) (i32.const 5))
    (i32.const 0))
)
"""

BODIES = {
    "drop_all": "",
    "never_returns": "(loop $forever (br $forever))",
    "allocates_forever": "(loop $grow (if (i32.eq (memory.grow (i32.const 16)) (i32.const -1)) (then unreachable)) (br $grow))",
    # an input over 300 bytes (several records, or one big one) traps
    "traps_on_big_input": "(if (i32.gt_u (local.get $len) (i32.const 300)) (then unreachable))",
}


WASI_IMPORT = '(import "wasi_snapshot_preview1" "fd_write" (func $fd_write (param i32 i32 i32 i32) (result i32)))'


def wat_module(body: str, export: str = "filter", imports: str = "") -> bytes:
    import wasmtime
    return wasmtime.wat2wasm(_TEMPLATE % {"body": BODIES[body], "export": export, "imports": imports})


def write_module(tmp_path: Path, body: str, export: str = "filter") -> str:
    path = tmp_path / f"{body}-{export}.wasm"
    path.write_bytes(wat_module(body, export))
    return str(path)


# The six examples: our module name -> the name of Fluvio's compiled module that does the same
FILTER_ON_A = "filter_on_a"
FILTER_PARAM = "filter_param"
MAP = "map"
FILTER_MAP = "filter_map"
ARRAY_MAP = "array_map"
AGGREGATE = "aggregate"
FLUVIO_NAMES = {
    FILTER_ON_A: "smartmodule_filter_on_a",
    FILTER_PARAM: "fluvio_smartmodule_filter_param",
    MAP: "fluvio_smartmodule_map",
    FILTER_MAP: "fluvio_smartmodule_filter_map",
    ARRAY_MAP: "fluvio_smartmodule_array_map_array",
    AGGREGATE: "fluvio_smartmodule_aggregate",
}


def example_source(name: str) -> str:
    """The WAT text of example ``name``: the prelude, then its body, in one module."""
    if name not in FLUVIO_NAMES:
        raise KeyError(f"no example SmartModule {name!r} (there are: {', '.join(FLUVIO_NAMES)})")
    prelude = (WAT_DIR / "prelude.wat").read_text()
    body = (WAT_DIR / f"{name}.wat").read_text()
    return f"(module\n{prelude}\n{body}\n)\n"


@functools.cache
def example_wasm(name: str) -> bytes:
    import wasmtime
    return wasmtime.wat2wasm(example_source(name))


_example_dir: str | None = None


def _remove_example_dir() -> None:
    if _example_dir is not None:
        shutil.rmtree(_example_dir, ignore_errors=True)


def example(name: str) -> str:
    """Path of example ``name`` compiled to a .wasm file (in a temporary directory of this
    process, removed at exit), for the APIs and CLI commands that take a path."""
    global _example_dir
    if _example_dir is None:
        _example_dir = tempfile.mkdtemp(prefix="rillet-sm-examples-")
        atexit.register(_remove_example_dir)
    path = Path(_example_dir) / f"{name}.wasm"
    if not path.exists():
        path.write_bytes(example_wasm(name))
    return str(path)
