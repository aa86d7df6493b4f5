"""Run a parameterized notebook with papermill into ``data/runs/<date>/`` plus an HTML copy.

Parameters come from a YAML file: either flat (``symbol: NIFTY``) or with one section per
notebook, keyed by the notebook's file stem (``10_history: {...}``), plus an optional
``common`` section merged under each. Unknown names are refused with a "did you mean", and
names that look like secrets are refused outright: credentials come from the environment,
``.env`` or the keyring, never from notebook parameters (they would be written into the
output notebook).
"""

from __future__ import annotations

import datetime as dt
import difflib
import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .calendar import IST
from .errors import ParameterError

__all__ = ["RunResult", "load_parameters", "run_notebook", "notebook_parameters", "run_output_dir"]

log = logging.getLogger(__name__)

_SECRET = re.compile(r"(token|secret|password|passwd|api_?key|totp|(^|_)pin($|_)|credential)", re.I)


@dataclass(frozen=True)
class RunResult:
    notebook: Path
    html: Path | None
    parameters: dict[str, Any]


def notebook_parameters(notebook: "str | Path") -> dict[str, Any]:
    """Names and defaults declared in the notebook's ``parameters`` cell."""
    import papermill as pm

    declared = pm.inspect_notebook(str(notebook))
    if not declared:
        raise ParameterError(f"{notebook} has no cell tagged 'parameters'; tag one in JupyterLab (cell → tags)")
    return {name: info.get("default") for name, info in declared.items()}


def load_parameters(params_file: "str | Path | None", notebook: "str | Path") -> dict[str, Any]:
    """The parameters for ``notebook`` from ``params_file``, checked against the notebook."""
    if params_file is None:
        return {}
    path = Path(params_file)
    if not path.is_file():
        raise ParameterError(f"parameter file {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ParameterError(f"{path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ParameterError(f"{path} must hold a mapping of parameter names to values")
    stem = Path(notebook).stem
    sections = {k for k, v in data.items() if isinstance(v, dict) and re.match(r"^\d\d_", str(k))}
    if sections or "common" in data:
        params = dict(data.get("common") or {})
        params.update(data.get(stem) or {})
    else:
        params = data
    _check(params, notebook, path)
    return params


def _check(params: dict[str, Any], notebook: "str | Path", source: Path | str) -> None:
    for name in params:
        if _SECRET.search(str(name)):
            raise ParameterError(
                f"{source}: parameter {name!r} looks like a secret; secrets never go into notebook parameters "
                "(they would be saved in the output notebook). Put it in the environment or .env instead"
            )
    declared = notebook_parameters(notebook)
    for name in params:
        if name not in declared:
            close = difflib.get_close_matches(str(name), list(declared), n=1)
            hint = f"; did you mean {close[0]!r}?" if close else f"; it takes: {', '.join(declared)}"
            raise ParameterError(f"{source}: {Path(notebook).name} has no parameter {name!r}{hint}")


def run_notebook(
    notebook: "str | Path",
    params_file: "str | Path | None" = None,
    *,
    parameters: dict[str, Any] | None = None,
    runs_dir: "str | Path | None" = None,
    html: bool = True,
    cwd: "str | Path | None" = None,
    progress: bool = False,
) -> RunResult:
    """Execute ``notebook`` with papermill; returns where the output notebook and HTML went.

    Raises papermill's ``PapermillExecutionError`` (naming the failing cell) when a cell fails;
    the partly executed notebook is still written, for inspection.
    """
    import papermill as pm

    from .config import project_root, settings

    nb = Path(notebook)
    if not nb.is_file():
        raise ParameterError(f"notebook {nb} not found")
    params = load_parameters(params_file, nb)
    if parameters:
        _check(parameters, nb, "parameters")
        params.update(parameters)
    now = dt.datetime.now(tz=dt.timezone.utc).astimezone(_ist())
    out_dir = Path(runs_dir or settings().runs_dir) / now.strftime("%Y-%m-%d")
    out_dir.mkdir(parents=True, exist_ok=True)
    out = out_dir / f"{nb.stem}-{now.strftime('%H%M%S')}.ipynb"
    n = 1
    while out.exists():
        n += 1
        out = out_dir / f"{nb.stem}-{now.strftime('%H%M%S')}-{n}.ipynb"
    log.info("running %s -> %s", nb, out)
    # The kernel inherits these: where the checkout is, and where this run's files go.
    extra = {"TRADEFLOW_RUN_DIR": str(out.with_suffix("")) + "-files"}
    if "TRADEFLOW_HOME" not in os.environ:
        extra["TRADEFLOW_HOME"] = str(project_root())
    saved = {k: os.environ.get(k) for k in extra}
    os.environ.update(extra)
    try:
        pm.execute_notebook(
            str(nb), str(out), parameters=params, cwd=str(cwd or nb.resolve().parent), progress_bar=progress, log_output=False
        )
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
    html_path = _to_html(out) if html else None
    return RunResult(out, html_path, params)


def run_output_dir(name: str = "notebook") -> Path:
    """Where a notebook writes its files: beside its output notebook when run by ``run_notebook``,
    else ``data/runs/<date>/<name>-<time>-files`` for an interactive session."""
    from .config import settings

    env = os.environ.get("TRADEFLOW_RUN_DIR")
    if env:
        path = Path(env)
    else:
        now = dt.datetime.now(tz=dt.timezone.utc).astimezone(_ist())
        path = settings().runs_dir / now.strftime("%Y-%m-%d") / f"{name}-{now.strftime('%H%M%S')}-files"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _ist() -> dt.tzinfo:
    from zoneinfo import ZoneInfo

    return ZoneInfo(IST)


def _to_html(ipynb: Path) -> Path:
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter().from_notebook_node(nbformat.read(str(ipynb), as_version=4))
    out = ipynb.with_suffix(".html")
    out.write_text(body, encoding="utf-8")
    return out
