"""Build step of the wheel: the web viewer goes into the package (pyproject.toml holds the rest).

``pip install .`` (and ``pip wheel .``, ``python -m build``) copies the viewer's files
(``web/viewer/``: HTML, JS, CSS; not the ``*.test.js``) and the pinned NiiVue bundle
(``web/node_modules/@niivue/niivue/dist/``, from ``npm ci``; the JavaScript files and
NiiVue's ``package.json`` for its version and licence) to ``segrefine/_web/`` in the
build, in the same layout, so an installed ``segrefine serve`` needs no source tree
(``segrefine.server.app.default_web_dir``). An editable install copies nothing: it
serves ``web/`` itself. Without ``npm ci`` the wheel still builds, with the viewer but
without NiiVue, and the build says so.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py

ROOT = Path(__file__).resolve().parent
WEB = ROOT / "web"
NIIVUE = Path("node_modules") / "@niivue" / "niivue"


def viewer_files() -> list[Path]:
    """The files of ``web/`` that go into the wheel, relative to ``web/``."""
    files = [p.relative_to(WEB) for p in sorted((WEB / "viewer").glob("*"))
             if p.is_file() and p.suffix in (".html", ".js", ".css") and not p.name.endswith(".test.js")]
    dist = WEB / NIIVUE / "dist"
    if dist.is_dir():
        files += [p.relative_to(WEB) for p in sorted(dist.glob("*.js"))]
        files.append(NIIVUE / "package.json")
    return files


class BuildPyWithViewer(build_py):
    """``build_py``, then the viewer's files into ``<build_lib>/segrefine/_web/``."""

    def run(self):
        super().run()
        if getattr(self, "editable_mode", False):
            return  # an editable install serves web/ from the source tree
        if not (WEB / "viewer" / "index.html").is_file():
            raise SystemExit(f"{WEB / 'viewer' / 'index.html'} is missing: the viewer cannot be packaged")
        if not (WEB / NIIVUE / "dist" / "index.js").is_file():
            self.warn(f"{WEB / NIIVUE / 'dist'} is missing (run `make setup` or `cd web && npm ci` "
                      "first): the wheel's viewer will have no NiiVue")
        target = Path(self.build_lib) / "segrefine" / "_web"
        if target.exists():
            shutil.rmtree(target)  # a stale copy from an earlier build
        for rel in viewer_files():
            (target / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(WEB / rel, target / rel)


setup(cmdclass={"build_py": BuildPyWithViewer})
