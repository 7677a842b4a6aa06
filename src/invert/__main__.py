"""``python -m invert``: the command line (``invert``), or, where the CLI's extra packages
are missing, the engine on the built-in synthetic layer with a table of explanations."""

from __future__ import annotations

import sys
import time

#: The packages of the ``cli`` extra: without one of them, the synthetic demo runs instead.
CLI_EXTRA = frozenset({"click", "tqdm", "jinja2", "pandas", "pyarrow"})


def synthetic_demo() -> int:
    """Explain the built-in synthetic layer and print the table (needs only the core)."""
    from .api import explain
    from .engine.synthetic import make_layer

    t = time.perf_counter()
    layer = make_layer()
    n, k = layer.activations.shape
    print(f"synthetic layer: N={n} samples, C={layer.concepts.matrix.shape[1]} concepts, "
          f"K={k} units ({len(layer.planted)} planted)")
    t = time.perf_counter()
    res = explain(layer.activations, layer.concepts, length=3, beam_size=5, min_fraction=0.002)
    print(f"explained in {time.perf_counter() - t:.1f} s\n")
    print(res.summary(top=15))
    print("\nplanted (first units):")
    for u in range(4):
        print(f"  unit {u}: planted {layer.planted[u]}, found {res[u][0].formula}")
    return 0


def main() -> int:
    """The ``invert`` command line; the synthetic demo where click & co. are missing.

    A user error returns 2 (one line); an internal error propagates with its traceback, so
    ``python -m invert`` exits with 1."""
    try:
        from .cli import main as cli_main
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] not in CLI_EXTRA:
            raise
        return synthetic_demo()
    return cli_main(sys.argv[1:])


if __name__ == "__main__":
    sys.exit(main())
