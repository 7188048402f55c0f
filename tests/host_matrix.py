"""The ComfyUI hosts the host tests run on, and how one pytest command runs them on every host.

ComfyUI is imported into the test process (comfy_host.import_comfy), so one process holds one ComfyUI version.
Every test marked `host` is parametrized with each host's name, so the host is in its id. The first host runs in
this process; the items of each other host run in one child pytest for that host (same ids, AVSYNC_HOST=<name>),
started when the first of them comes up, and the child's reports are reported here as if run here: the closing
line counts every host, -x and the failure reports work as usual, and the child's full output is in
outputs/hosts/<name>.log. The browser tests also get a page per host (the page the host pins; the newest page with
Nodes 2.0 off and on on the newest host), see `pages`.
"""

from __future__ import annotations

import functools
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest
from _pytest.reports import TestReport

import comfy_host

HOSTS_DIR = comfy_host.HOSTS_DIR
LOG_DIR = comfy_host.REPO_ROOT / "outputs" / "hosts"
HOST_PARAM, PAGE_PARAM = "comfyui_host", "browser_page"
HOST_ENV, SELECT_ENV, REPORT_ENV = "AVSYNC_HOST", "AVSYNC_HOST_SELECT", "AVSYNC_HOST_REPORT"


def version_key(version: str) -> tuple[int, ...]:
    return tuple(int(part) for part in re.findall(r"\d+", version))


def _pin(root: Path, package: str) -> str | None:
    requirements = root / "requirements.txt"
    text = requirements.read_text() if requirements.is_file() else ""
    match = re.search(rf"^\s*{re.escape(package)}\s*==\s*([\w.]+)", text, re.MULTILINE)
    return match.group(1) if match else None


@dataclass(frozen=True)
class Host:
    name: str
    root: Path
    version: str

    @property
    def pinned_page(self) -> str | None:
        """The comfyui-frontend-package version the host's requirements.txt pins."""
        return _pin(self.root, "comfyui-frontend-package")


@dataclass(frozen=True)
class Page:
    """A page (comfyui-frontend-package version) and which node renderer it runs (Nodes 2.0 or the canvas)."""

    frontend: str
    nodes2: bool = False

    @property
    def id(self) -> str:
        return f"page-{self.frontend}" + ("-nodes2" if self.nodes2 else "")

    @property
    def root(self) -> Path:
        """What the server's --front-end-root takes (provisioned by scripts/setup_env.sh)."""
        return HOSTS_DIR / f"frontend-{self.frontend}" / "comfyui_frontend_package" / "static"


@functools.cache
def hosts() -> tuple[Host, ...]:
    """Every host, newest ComfyUI first: those provisioned in .hosts/, and COMFYUI_PATH's (else /opt/ComfyUI's)."""
    roots = [p.resolve() for p in sorted(HOSTS_DIR.glob("comfyui-*")) if comfy_host.is_comfyui(p)]
    checkout = comfy_host.configured_checkout()
    if checkout is not None and checkout not in roots:
        roots.append(checkout)
    found: list[Host] = []
    for root in sorted(roots, key=lambda r: version_key(comfy_host.comfyui_version(r)), reverse=True):
        name = f"comfyui-{comfy_host.comfyui_version(root)}"
        taken = {h.name for h in found}
        name = next(n for n in [name] + [f"{name}-{i}" for i in range(2, 99)] if n not in taken)
        found.append(Host(name, root, comfy_host.comfyui_version(root)))
    return tuple(found)


@functools.cache
def newest_page() -> str | None:
    """The newest page setup_env.sh provisioned (.hosts/frontend-newest), else the newest provisioned at all."""
    link = HOSTS_DIR / "frontend-newest"
    if link.is_symlink() or link.is_dir():
        return link.resolve().name.removeprefix("frontend-")
    versions = [p.name.removeprefix("frontend-") for p in HOSTS_DIR.glob("frontend-[0-9]*")]
    return max(versions, key=version_key, default=None)


def pages(host: Host) -> list[Page]:
    """The host's own page; on the newest host also the newest page, with Nodes 2.0 off and on."""
    own = [Page(host.pinned_page)] if host.pinned_page else []
    newest = newest_page()
    if newest is None or host != hosts()[0]:
        return own
    return [p for p in own if p.frontend != newest] + [Page(newest), Page(newest, nodes2=True)]


def local_host() -> Host | None:
    """The host this process imports: AVSYNC_HOST's in a child, else the first one."""
    wanted = os.environ.get(HOST_ENV)
    if not wanted:
        return hosts()[0] if hosts() else None
    for host in hosts():
        if host.name == wanted:
            return host
    raise pytest.UsageError(f"{HOST_ENV}={wanted} names no host; the hosts are {[h.name for h in hosts()]}")


def host_of(item: pytest.Item) -> str | None:
    callspec = getattr(item, "callspec", None)
    return callspec.params.get(HOST_PARAM) if callspec else None


# --------------------------------------------------------------------------------------------------
# pytest hooks (conftest.py imports them)
# --------------------------------------------------------------------------------------------------


def pytest_configure(config: pytest.Config) -> None:
    try:
        host = local_host()
    except pytest.fail.Exception as error:  # a COMFYUI_PATH that holds no ComfyUI
        raise pytest.UsageError(str(error)) from None
    if host is not None:
        comfy_host.select_host(host.root)
    if os.environ.get(REPORT_ENV):
        config.pluginmanager.register(ChildReports(Path(os.environ[REPORT_ENV])), "avsync-child-reports")
    elif host is not None:
        config.pluginmanager.register(HostRunner(config, host), "avsync-host-runner")


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if metafunc.definition.get_closest_marker("host") is None or not hosts():
        return  # no host at all: comfy_host.require_comfyui() skips (fails under CI=true)
    run_here = [h for h in hosts() if h == local_host()] if os.environ.get(HOST_ENV) else list(hosts())
    if HOST_PARAM not in metafunc.fixturenames:
        metafunc.fixturenames.append(HOST_PARAM)
    if PAGE_PARAM in metafunc.fixturenames:
        pairs = [(h.name, page) for h in run_here for page in pages(h)]
        ids = [f"{h}-{page.id}" for h, page in pairs]
        metafunc.parametrize([HOST_PARAM, PAGE_PARAM], pairs, ids=ids, scope="module")
    else:
        metafunc.parametrize(HOST_PARAM, [h.name for h in run_here], ids=[h.name for h in run_here])


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.environ.get(SELECT_ENV):  # a child runs exactly the items its parent hands it
        wanted = set(Path(os.environ[SELECT_ENV]).read_text().splitlines())
        config.hook.pytest_deselected(items=[i for i in items if i.nodeid not in wanted])
        items[:] = [i for i in items if i.nodeid in wanted]
        return
    local = local_host()
    # Other hosts' items first: their child runs while this process holds no ComfyUI server or model.
    items.sort(key=lambda item: 0 if host_of(item) not in (None, local and local.name) else 1)


class HostRunner:
    """In the parent: runs each other host's items in a child pytest, reports its results, and sums up per host."""

    def __init__(self, config: pytest.Config, local: Host):
        self.config, self.local = config, local
        self.results: dict[str, dict[str, list[dict]]] = {}
        self.host_by_nodeid: dict[str, str | None] = {}
        self.seconds: dict[str, float] = {}
        self.counts: dict[str, int] = {}

    def pytest_collection_finish(self, session: pytest.Session) -> None:
        self.host_by_nodeid = {item.nodeid: host_of(item) for item in session.items}

    @pytest.hookimpl(tryfirst=True)
    def pytest_runtest_protocol(self, item: pytest.Item, nextitem: pytest.Item | None) -> bool | None:
        name = host_of(item)
        if name is None or name == self.local.name:
            return None
        if name not in self.results:
            items = [i for i in item.session.items if host_of(i) == name]
            self.results[name] = self._run_child(next(h for h in hosts() if h.name == name), items)
        item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
        for data in self.results[name].get(item.nodeid) or [self._not_run(name)]:
            item.ihook.pytest_runtest_logreport(report=_report(item, data))
        item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
        return True

    def pytest_runtest_logreport(self, report: TestReport) -> None:
        name = self.host_by_nodeid.get(report.nodeid)
        if name is not None:
            self.seconds[name] = self.seconds.get(name, 0.0) + report.duration
            counted = report.when == "call" or (report.when == "setup" and report.outcome != "passed")
            self.counts[name] = self.counts.get(name, 0) + counted

    def pytest_terminal_summary(self, terminalreporter) -> None:
        for host in hosts():
            if host.name in self.counts:
                where = "this process" if host == self.local else f"log {LOG_DIR / (host.name + '.log')}"
                terminalreporter.write_line(
                    f"host {host.name} ({host.root}): {self.counts[host.name]} tests, "
                    f"{self.seconds[host.name]:.0f} s ({where})"
                )

    def _run_child(self, host: Host, items: list[pytest.Item]) -> dict[str, list[dict]]:
        LOG_DIR.mkdir(parents=True, exist_ok=True)
        log = LOG_DIR / f"{host.name}.log"
        with tempfile.TemporaryDirectory(prefix="avsync-host-") as tmp:
            select, report = Path(tmp, "select.txt"), Path(tmp, "report.json")
            select.write_text("\n".join(i.nodeid for i in items) + "\n")
            files = sorted({i.nodeid.split("::")[0] for i in items})
            env = dict(os.environ, **{HOST_ENV: host.name, SELECT_ENV: str(select), REPORT_ENV: str(report)})
            command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-o", "addopts=-ra", *files]
            reporter = self.config.pluginmanager.get_plugin("terminalreporter")
            if reporter is not None:
                reporter.ensure_newline()
                reporter.write_line(f"{host.name}: {len(items)} host tests in a separate process, log: {log}")
            start = time.monotonic()
            with open(log, "w") as out:
                code = subprocess.call(command, cwd=self.config.rootpath, env=env, stdout=out, stderr=subprocess.STDOUT)
            self._child_note = (host.name, code, time.monotonic() - start, log)
            return json.loads(report.read_text()) if report.is_file() else {}

    def _not_run(self, name: str) -> dict:
        _, code, _, log = self._child_note
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:]) if log.is_file() else ""
        text = f"The child pytest for host {name} did not run this test (exit code {code}); log {log}:\n{tail}"
        return {"when": "call", "outcome": "failed", "longrepr": text, "duration": 0.0, "sections": []}


def _report(item: pytest.Item, data: dict) -> TestReport:
    longrepr = data["longrepr"]
    if data["outcome"] == "skipped" and isinstance(longrepr, list):
        longrepr = tuple(longrepr)
    report = TestReport(
        nodeid=item.nodeid,
        location=item.location,
        keywords={k: 1 for k in item.keywords},
        outcome=data["outcome"],
        longrepr=longrepr,
        when=data["when"],
        sections=[tuple(s) for s in data["sections"]],
        duration=data["duration"],
    )
    if "wasxfail" in data:
        report.wasxfail = data["wasxfail"]
    return report


class ChildReports:
    """In a child: writes every report as JSON for the parent."""

    def __init__(self, path: Path):
        self.path, self.reports = path, {}

    def pytest_runtest_logreport(self, report: TestReport) -> None:
        longrepr = report.longrepr
        if not (report.skipped and isinstance(longrepr, tuple)):
            longrepr = None if longrepr is None else str(report.longreprtext)
        data = {
            "when": report.when,
            "outcome": report.outcome,
            "longrepr": longrepr,
            "duration": report.duration,
            "sections": [list(s) for s in report.sections],
        }
        if hasattr(report, "wasxfail"):
            data["wasxfail"] = report.wasxfail
        self.reports.setdefault(report.nodeid, []).append(data)

    def pytest_sessionfinish(self) -> None:
        self.path.write_text(json.dumps(self.reports))
