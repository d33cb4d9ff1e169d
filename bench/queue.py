"""Benchmark of outgoing delivery: runs ``bench/queue_delivery.py`` (see there).

Usage::

    .venv/bin/python bench/queue.py [--quick] [options of queue_delivery.py]

A script's directory comes first on ``sys.path``, so for every script in ``bench/``
``import queue`` finds this file rather than the standard library's module. Imported
under that name, it puts the standard library's ``queue`` in its place (Twisted's
thread pool and everything else need the real one).
"""

import os
import sys

if __name__ == "queue":
    import importlib.util
    import sysconfig

    _spec = importlib.util.spec_from_file_location(
        "queue", os.path.join(sysconfig.get_paths()["stdlib"], "queue.py"))
    _module = importlib.util.module_from_spec(_spec)
    sys.modules["queue"] = _module
    _spec.loader.exec_module(_module)
elif __name__ == "__main__":
    import runpy

    runpy.run_path(os.path.join(os.path.dirname(os.path.abspath(__file__)), "queue_delivery.py"),
                   run_name="__main__")
