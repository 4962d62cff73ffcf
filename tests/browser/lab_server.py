"""A throwaway JupyterLab server: fresh, empty config, no token, no news popup, lessons in fast mode.

Each server gets its own config, data, runtime, settings and workspace folders under a scratch
directory, so nothing a learner (or a previous lesson) left behind can change what the browser sees.
"""

from __future__ import annotations

import http.cookiejar
import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

# The JupyterLab plugin that pops "Would you like to receive official Jupyter news?" on first run.
ANNOUNCEMENTS_PLUGIN = "@jupyterlab/apputils-extension:announcements"
# Front-end extensions the lessons need: the widget manager and anywidget (plotly's FigureWidget).
WIDGET_MANAGER_EXTENSION = "@jupyter-widgets/jupyterlab-manager"
ANYWIDGET_EXTENSION = "anywidget"

STARTUP_TIMEOUT_S = 60


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _write_json(path: Path, data: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=1))


class LabServer:
    """JupyterLab on 127.0.0.1 serving ``root_dir``; use as a context manager.

    ``disabled_extensions`` switches front-end extensions off, as ``jupyter labextension disable``
    would (the harness's own tests use it to show that a missing widget front-end is caught).
    """

    def __init__(self, root_dir: Path, scratch_dir: Path, disabled_extensions: tuple[str, ...] = ()):
        self.root_dir = Path(root_dir)
        self.scratch_dir = Path(scratch_dir)
        self.disabled_extensions = (ANNOUNCEMENTS_PLUGIN, *disabled_extensions)
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.scratch_dir / "jupyter-server.log"
        self._process: subprocess.Popen | None = None

    def environment(self) -> dict[str, str]:
        """The server's (and so each kernel's) environment: fresh Jupyter dirs, fast offline lessons."""
        dirs = {
            "JUPYTER_CONFIG_DIR": "config",
            "JUPYTER_DATA_DIR": "data",
            "JUPYTER_RUNTIME_DIR": "runtime",
            "JUPYTERLAB_SETTINGS_DIR": "lab-settings",
            "JUPYTERLAB_WORKSPACES_DIR": "lab-workspaces",
            "IPYTHONDIR": "ipython",
            "MPLCONFIGDIR": "matplotlib",
        }
        env = dict(os.environ)
        for name, sub in dirs.items():
            (self.scratch_dir / sub).mkdir(parents=True, exist_ok=True)
            env[name] = str(self.scratch_dir / sub)
        env.pop("JUPYTER_PATH", None)
        env.pop("JUPYTER_CONFIG_PATH", None)
        env.update(SAELAB_FAST="1", HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", HF_DATASETS_OFFLINE="1")
        return env

    def __enter__(self):
        env = self.environment()
        # Same file `jupyter labextension disable` writes; here it lives in the fresh config dir only.
        page_config = Path(env["JUPYTER_CONFIG_DIR"]) / "labconfig" / "page_config.json"
        _write_json(page_config, {"disabledExtensions": {name: True for name in self.disabled_extensions}})
        # Never check for updates or news: both would be requests to the internet.
        settings = Path(env["JUPYTERLAB_SETTINGS_DIR"]) / "@jupyterlab" / "apputils-extension"
        _write_json(settings / "notification.jupyterlab-settings", {"fetchNews": "false", "checkForUpdates": False})
        command = [
            sys.executable, "-m", "jupyterlab", "--no-browser", "--allow-root",
            "--ip=127.0.0.1", f"--port={self.port}", "--ServerApp.port_retries=0",
            "--IdentityProvider.token=", "--ServerApp.password=",
            f"--ServerApp.root_dir={self.root_dir}",
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        ]
        log = self.log_path.open("w")
        self._process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, start_new_session=True)
        log.close()
        try:
            self._wait_until_up()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_until_up(self) -> None:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"JupyterLab exited at start-up:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(f"{self.url}/api/status", timeout=2) as response:
                    if response.status == 200:
                        return
            except OSError:
                time.sleep(0.25)
        raise TimeoutError(f"JupyterLab did not answer within {STARTUP_TIMEOUT_S} s:\n{self.log_tail()}")

    def shutdown_kernels(self) -> None:
        """Stop every kernel (and its session), so the next notebook starts from nothing."""
        # The server wants its XSRF cookie echoed in a header on DELETE, as JupyterLab itself does.
        cookies = http.cookiejar.CookieJar()
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(cookies))
        opener.open(f"{self.url}/lab", timeout=30).close()
        xsrf = {"X-XSRFToken": next(c.value for c in cookies if c.name == "_xsrf")}
        for kind in ("sessions", "kernels"):
            with opener.open(f"{self.url}/api/{kind}", timeout=10) as response:
                running = json.load(response)
            for item in running:
                request = urllib.request.Request(f"{self.url}/api/{kind}/{item['id']}", method="DELETE",
                                                 headers=xsrf)
                with opener.open(request, timeout=30):
                    pass

    def running_kernels(self) -> int:
        with urllib.request.urlopen(f"{self.url}/api/kernels", timeout=10) as response:
            return len(json.load(response))

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return ""
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def __exit__(self, *exc) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.terminate()  # SIGTERM: the server shuts its kernels down before exiting.
        try:
            self._process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait(timeout=5)
