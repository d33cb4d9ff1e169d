"""The import layering of DESIGN.md (issue 11): lower packages never import higher ones,
so local delivery has one path (smtpserver and queue -> delivery -> store) and services
are wired only in ``moxtw.app``. Read from the source with ``ast``, nothing imported."""

import ast
import os

from twisted.trial import unittest

import moxtw

ROOT = os.path.dirname(os.path.abspath(moxtw.__file__))

# package -> packages it must not import (directly; indirect imports follow from the rows).
FORBIDDEN = {
    "moxtw.db": {"moxtw.store", "moxtw.queue", "moxtw.delivery", "moxtw.reports", "moxtw.smtpserver",
                 "moxtw.imapserver", "moxtw.app"},
    "moxtw.store": {"moxtw.queue", "moxtw.delivery", "moxtw.reports", "moxtw.smtpserver",
                    "moxtw.imapserver", "moxtw.app"},
    "moxtw.message": {"moxtw.store", "moxtw.queue", "moxtw.delivery", "moxtw.smtpserver", "moxtw.imapserver"},
    "moxtw.smtp": {"moxtw.store", "moxtw.queue", "moxtw.delivery", "moxtw.smtpserver", "moxtw.smtpclient"},
    "moxtw.smtpclient": {"moxtw.store", "moxtw.queue", "moxtw.delivery", "moxtw.smtpserver"},
    "moxtw.delivery": {"moxtw.queue", "moxtw.reports", "moxtw.smtpserver", "moxtw.imapserver", "moxtw.app"},
    "moxtw.queue": {"moxtw.reports", "moxtw.smtpserver", "moxtw.imapserver", "moxtw.app"},
    "moxtw.reports": {"moxtw.smtpserver", "moxtw.imapserver", "moxtw.delivery", "moxtw.app"},
    "moxtw.imapserver": {"moxtw.queue", "moxtw.delivery", "moxtw.smtpserver", "moxtw.app"},
    "moxtw.smtpserver": {"moxtw.imapserver", "moxtw.app"},
    # Operator tools work on config and files (the queue's verify too); the server's
    # protocol parts reach them, not back.
    # Junk filtering works on an account's store; delivery calls it, not the reverse.
    "moxtw.junk": {"moxtw.smtpserver", "moxtw.imapserver", "moxtw.delivery", "moxtw.queue", "moxtw.app"},
    "moxtw.admin": {"moxtw.smtpserver", "moxtw.imapserver", "moxtw.delivery", "moxtw.app"},
}

# Only these build the service tree.
MAY_IMPORT_APP = {"moxtw.tap", "moxtw.localserve", "moxtw.app"}


def package_imports():
    """{module: {(imported top-level package, line)}} for every module outside the tests."""
    out = {}
    for top, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in ("test", "__pycache__")]
        for name in files:
            if not name.endswith(".py"):
                continue
            path = os.path.join(top, name)
            rel = os.path.relpath(path, os.path.dirname(ROOT))[:-3].replace(os.sep, ".")
            module = rel.removesuffix(".__init__")
            with open(path, encoding="utf-8") as f:
                tree = ast.parse(f.read(), path)
            found = set()
            package = module.split(".") if name == "__init__.py" else module.split(".")[:-1]
            for node in ast.walk(tree):
                if isinstance(node, ast.Import):
                    names = [a.name for a in node.names]
                elif isinstance(node, ast.ImportFrom):
                    base = node.module or ""
                    if node.level:
                        # Relative: from the module's package, one level up per extra dot.
                        up = package[:len(package) - node.level + 1]
                        base = ".".join(up + ([node.module] if node.module else []))
                    names = [base] + [f"{base}.{a.name}" for a in node.names]
                else:
                    continue
                for n in names:
                    parts = n.split(".")
                    if parts[0] == "moxtw" and len(parts) > 1:
                        found.add((f"moxtw.{parts[1]}", node.lineno))
            out[module] = found
    return out


def top_package(module):
    return ".".join(module.split(".")[:2])


class LayerTests(unittest.SynchronousTestCase):
    def test_lower_layers_do_not_import_higher(self):
        bad = []
        for module, imports in sorted(package_imports().items()):
            forbidden = FORBIDDEN.get(top_package(module), set())
            for target, line in sorted(imports):
                if target in forbidden:
                    bad.append(f"{module} line {line} imports {target}")
        self.assertEqual(bad, [])

    def test_only_the_entry_points_import_app(self):
        bad = [f"{module} line {line}" for module, imports in sorted(package_imports().items())
               for target, line in sorted(imports)
               if target == "moxtw.app" and module not in MAY_IMPORT_APP]
        self.assertEqual(bad, [])

    def test_relative_imports_resolved(self):
        """``from ..queue import db`` in moxtw/delivery/x.py names moxtw.queue."""
        import tempfile
        d = tempfile.mkdtemp()
        self.addCleanup(__import__("shutil").rmtree, d)
        global ROOT
        saved = ROOT
        try:
            ROOT = os.path.join(d, "moxtw")
            os.makedirs(os.path.join(ROOT, "delivery"))
            with open(os.path.join(ROOT, "delivery", "x.py"), "w") as f:
                f.write("from ..queue import db\nfrom . import local\n")
            imports = package_imports()
        finally:
            ROOT = saved
        self.assertEqual({t for t, _ in imports["moxtw.delivery.x"]}, {"moxtw.queue", "moxtw.delivery"})

    def test_the_rule_sees_imports(self):
        """The walk finds known imports (a rule that saw nothing would always pass)."""
        imports = package_imports()
        self.assertIn("moxtw.delivery", {t for t, _ in imports["moxtw.smtpserver.backend"]})
        self.assertIn("moxtw.store", {t for t, _ in imports["moxtw.delivery.local"]})
        self.assertIn("moxtw.app", {t for t, _ in imports["moxtw.tap"]})
