"""Start a Flower federation on 127.0.0.1, run our App on it, and stop everything.

:class:`LocalFederation` owns every process it starts (a SuperLink, and in
deployment mode k SuperNodes), each in its own session so that stopping it
also stops its children (ServerApp/ClientApp subprocesses, Ray). It always
cleans up — on success, on failure, on Ctrl-C — and binds nothing but
127.0.0.1. ``flwr`` gets a private ``FLWR_HOME`` with one connection, and the
environment switches off everything that would reach the internet
(dependency installation, telemetry, update checks, Ray usage stats).

``flwr run`` exits 0 even when the run failed, so the outcome is read from the
ServerApp's files: ``metrics.json`` or ``error.json`` (see :mod:`.server_app`).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Self

from ...arguments import add_set_argument
from ...config import RunConfig, config_to_dict, dump_toml
from .app_config import COMPONENTS, render_pyproject

__all__ = ["FAST_POLL_ENV", "OFFLINE_ENV", "FlowerRunError", "LocalFederation", "register", "run_flower"]

#: Flower and Ray, with nothing that reaches beyond the machine.
OFFLINE_ENV = {
    "FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION": "1",
    "FLWR_TELEMETRY_ENABLED": "0",
    "FLWR_DISABLE_UPDATE_CHECK": "1",
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_DISABLE_DOCKER_CPU_WARNING": "1",
    "PYTHONUNBUFFERED": "1",
}

#: Flower's own polling knobs (documented, settable): the SuperExec that SuperLink and SuperNodes
#: start inherits their environment, and polls for tasks every second by default
#: (F/supercore/superexec/run_superexec.py). What stays Flower's own cost — the SuperNode's 3 s idle
#: sleep, the process per message — is measured in benchmarks/flower_overhead.py (docs/flower.md).
FAST_POLL_ENV = {"FLWR_SUPEREXEC_TASK_POLL_INTERVAL": "0.05"}


class FlowerRunError(RuntimeError):
    """The Flower run did not produce a result; the message carries the log tails."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _port_open(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(encoding="utf-8", errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _process_table() -> dict[int, tuple[int, int, str]]:
    """pid -> (ppid, session id, state) from /proc (empty where there is no /proc)."""
    table = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # Fields after the parenthesised command: state ppid pgrp session ...
        fields = stat[stat.rfind(")") + 2:].split()
        if len(fields) > 3:
            table[int(entry.name)] = (int(fields[1]), int(fields[3]), fields[0])
    return table


def _family(roots: set[int]) -> tuple[set[int], set[int]]:
    """The descendants of ``roots`` (roots included) and every session they lead or belong to.

    Flower's SuperExec starts its own session (setsid), so a process group
    alone misses the ServerApp/ClientApp processes it runs.
    """
    table = _process_table()
    members = set(roots)
    changed = True
    while changed:
        changed = False
        for pid, (ppid, _, _) in table.items():
            if ppid in members and pid not in members:
                members.add(pid)
                changed = True
    sessions = {table[pid][1] for pid in members if pid in table} | set(roots)
    return members, sessions


def _kill_family(pids: set[int], sessions: set[int], settle_seconds: float = 2.0) -> None:
    """SIGKILL the given processes and every live member of the given sessions, until none is left."""
    me = os.getpid()
    deadline = time.monotonic() + settle_seconds
    while True:
        table = _process_table()
        alive = [pid for pid, (_, sid, state) in table.items()
                 if state != "Z" and pid != me and (pid in pids or sid in sessions)]
        for pid in alive:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.kill(pid, signal.SIGKILL)
        if (not alive and time.monotonic() > deadline) or time.monotonic() > deadline + 10:
            return
        time.sleep(0.2)


@contextlib.contextmanager
def _sigterm_as_exit():
    """Turn SIGTERM into SystemExit while the federation runs, so that cleanup still happens."""
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def _exit(signum, frame):
        raise SystemExit(128 + signum)

    previous = signal.signal(signal.SIGTERM, _exit)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def _toml_string(value: str) -> str:
    return json.dumps(value)  # a JSON string literal is a valid TOML basic string


class LocalFederation:
    """A SuperLink (and, for ``mode="deployment"``, ``num_nodes`` SuperNodes) on 127.0.0.1.

    Use as a context manager; :meth:`close` stops every process it started.
    """

    def __init__(self, mode: str, num_nodes: int, work_dir: str | Path | None = None, *,
                 startup_timeout: float = 60.0, aggregation: str = "ours") -> None:
        if aggregation not in COMPONENTS:
            raise ValueError(f"aggregation must be one of {sorted(COMPONENTS)}")
        self.aggregation = aggregation
        if mode not in ("sim", "deployment"):
            raise ValueError("mode must be 'sim' or 'deployment'")
        if num_nodes < 1:
            raise ValueError("num_nodes must be >= 1")
        if shutil.which("flower-superlink") is None:
            raise FlowerRunError("Flower is not installed: pip install 'secure-fedrec[flower]'")
        self.mode = mode
        self.num_nodes = num_nodes
        self.startup_timeout = startup_timeout
        self._own_dir = work_dir is None
        self.work_dir = Path(work_dir or tempfile.mkdtemp(prefix="sfr-flower-"))
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir = self.work_dir / "logs"
        self.log_dir.mkdir(exist_ok=True)
        self.env = {**os.environ, **OFFLINE_ENV, **FAST_POLL_ENV,
                    "FLWR_HOME": str(self.work_dir / "flwr-home")}
        self.processes: dict[str, subprocess.Popen] = {}
        self.supernodes: list[str] = []
        self.port = free_port()
        self.app_dir = self.work_dir / "app"

    # -- processes ------------------------------------------------------------------------
    def _spawn(self, name: str, argv: list[str]) -> subprocess.Popen:
        log = (self.log_dir / f"{name}.log").open("wb")
        try:
            proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env,
                                    cwd=self.work_dir, start_new_session=True)
        finally:
            log.close()
        self.processes[name] = proc
        return proc

    def start(self) -> Self:
        self._write_flwr_home()
        self._write_app()
        try:
            self._spawn("superlink", [
                "flower-superlink", "--insecure", "--isolation", "subprocess",
                *(["--simulation"] if self.mode == "sim" else []),
                # One HTTP port serves the Fleet, Control and Runtime APIs in Flower 1.42.
                "--host", "127.0.0.1", "--port", str(self.port),
                "--disable-runtime-dependency-installation",
            ])
            self._wait_for_port("superlink", self.port)
            if self.mode == "deployment":
                for k in range(self.num_nodes):
                    name = f"supernode-{k}"
                    self._spawn(name, [
                        "flower-supernode", "--insecure",
                        "--superlink", f"127.0.0.1:{self.port}",
                        "--host", "127.0.0.1", "--port", str(free_port()),
                        "--isolation", "subprocess",
                        "--node-config", f"partition-id={k} num-partitions={self.num_nodes}",
                    ])
                    self.supernodes.append(name)
        except BaseException:
            self.close()
            raise
        return self

    def _wait_for_port(self, name: str, port: int) -> None:
        deadline = time.monotonic() + self.startup_timeout
        proc = self.processes[name]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise FlowerRunError(f"{name} exited with {proc.returncode}:\n"
                                     f"{_tail(self.log_dir / f'{name}.log')}")
            if _port_open(port):
                return
            time.sleep(0.2)
        raise FlowerRunError(f"{name} did not open 127.0.0.1:{port} within {self.startup_timeout} s")

    def kill_node(self, index: int, sig: int = signal.SIGKILL) -> None:
        """Kill SuperNode ``index`` with everything it started (SuperExec, ClientApps)."""
        proc = self.processes[self.supernodes[index]]
        family, _ = _family({proc.pid})
        for pid in family:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def close(self) -> None:
        """Stop everything, SuperNodes first; SIGTERM, then SIGKILL after a grace period."""
        order = list(reversed(list(self.processes.items())))
        family, sessions = _family({proc.pid for _, proc in order})
        for _, proc in order:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for _, proc in order:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
        for _, proc in order:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        # Children outlive their parents: Ray's agents and workers, ServerApp/ClientApp processes.
        family_now, sessions_now = _family(family)
        _kill_family(family | family_now, sessions | sessions_now)
        self.processes.clear()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- files ----------------------------------------------------------------------------
    def _write_flwr_home(self) -> None:
        home = Path(self.env["FLWR_HOME"])
        home.mkdir(parents=True, exist_ok=True)
        (home / "config.toml").write_text(
            '[superlink]\ndefault = "sfr"\n\n'
            f'[superlink.sfr]\naddress = "127.0.0.1:{self.port}"\ninsecure = true\n',
            encoding="utf-8")

    def _write_app(self) -> None:
        """The app folder ``flwr run`` builds: flower-app/pyproject.toml, rendered the same way."""
        self.app_dir.mkdir(parents=True, exist_ok=True)
        (self.app_dir / "pyproject.toml").write_text(render_pyproject(self.aggregation), encoding="utf-8")
        (self.app_dir / "README.md").write_text(
            "Generated by secure_fedrec.engines.flower.launcher (as flower-app/); the code is the "
            "installed secure_fedrec package.\n", encoding="utf-8")

    # -- runs -----------------------------------------------------------------------------
    def submit(self, config: RunConfig, out_dir: str | Path, *,
               paillier_keys: str | Path | None = None) -> subprocess.Popen:
        """Write the config and start ``flwr run`` (which streams the run's logs).

        The run config is the app's: ``config-path`` (the job's config, with the
        engine and the number of nodes of this federation), ``out-dir`` and, for
        ``aggregation.protocol = "paillier"``, ``paillier-keys``: the dealer runs
        here, before the job, unless ``paillier_keys`` names a folder it already
        filled (see :mod:`.paillier`): the ServerApp never sees a key share.
        """
        if (paillier_keys is None and self.aggregation == "ours"
                and config.aggregation.protocol == "paillier"):
            from .paillier import deal_paillier_keys

            paillier_keys = deal_paillier_keys(config, self.work_dir / "paillier-keys")
        config = dataclasses.replace(config, engine="flower-sim" if self.mode == "sim" else "flower",
                                     flower=dataclasses.replace(config.flower, nodes=self.num_nodes))
        out = Path(out_dir).resolve()
        out.mkdir(parents=True, exist_ok=True)
        for stale in ("metrics.json", "error.json", "progress.jsonl"):
            (out / stale).unlink(missing_ok=True)
        config_path = out / "config.toml"
        config_path.write_text(dump_toml(config_to_dict(config)), encoding="utf-8")
        overrides = self.work_dir / f"run-config-{time.time_ns()}.toml"
        overrides.write_text("\n".join([
            f"config-path = {_toml_string(str(config_path))}",
            f"out-dir = {_toml_string(str(out))}",
            f"paillier-keys = {_toml_string(str(Path(paillier_keys).resolve()) if paillier_keys else '')}",
        ]) + "\n", encoding="utf-8")
        return self._flwr_run(self.app_dir, overrides)

    def submit_app(self, app_dir: str | Path, run_config: dict[str, Any]) -> subprocess.Popen:
        """Start ``flwr run`` of any Flower app on this federation (its run config: TOML scalars),
        e.g. Flower's own example app for the overhead benchmark, or the drop-in example."""
        overrides = self.work_dir / f"run-config-{time.time_ns()}.toml"
        lines = []
        for key, value in run_config.items():
            literal = (("true" if value else "false") if isinstance(value, bool)
                       else repr(value) if isinstance(value, (int, float)) else _toml_string(str(value)))
            lines.append(f'"{key}" = {literal}')
        overrides.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return self._flwr_run(Path(app_dir).resolve(), overrides)

    def _flwr_run(self, app_dir: Path, overrides: Path) -> subprocess.Popen:
        argv = ["flwr", "run", str(app_dir), "sfr", "--run-config", str(overrides), "--stream"]
        if self.mode == "sim":
            argv += ["--federation-config",
                     f"num-supernodes={self.num_nodes} client-resources-num-cpus=1"]
        return self._spawn(f"flwr-run-{len([n for n in self.processes if n.startswith('flwr-run')])}",
                           argv)

    def wait_for_exit(self, run: subprocess.Popen, timeout: float) -> int:
        """Wait for ``flwr run --stream`` to return (the run ended, well or not); its exit code."""
        try:
            return run.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            raise FlowerRunError(f"flwr run did not finish within {timeout} s:\n{self.logs()}") from None

    def wait(self, run: subprocess.Popen, out_dir: str | Path, timeout: float) -> dict[str, Any]:
        """Wait for the run's metrics.json (or error.json); returns the metrics."""
        out = Path(out_dir).resolve()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (out / "metrics.json").exists():
                return json.loads((out / "metrics.json").read_text(encoding="utf-8"))
            if (out / "error.json").exists():
                error = json.loads((out / "error.json").read_text(encoding="utf-8"))
                raise FlowerRunError(f"the ServerApp failed: {error['error']}\n{error['traceback']}")
            superlink = self.processes.get("superlink")
            if superlink is not None and superlink.poll() is not None:
                raise FlowerRunError(f"the SuperLink exited:\n{self.logs()}")
            if run.poll() is not None and not (out / "metrics.json").exists():
                # `flwr run --stream` returned; give the ServerApp a moment to write its file.
                time.sleep(2)
                if not (out / "metrics.json").exists() and not (out / "error.json").exists():
                    raise FlowerRunError(f"flwr run ended (exit {run.returncode}) without a result:\n"
                                         f"{self.logs()}")
            time.sleep(0.2)
        raise FlowerRunError(f"no result within {timeout} s:\n{self.logs()}")

    def kill_when(self, run: subprocess.Popen, out_dir: str | Path, node: int, round_index: int,
                  stage: str, *, timeout: float, sig: int = signal.SIGKILL) -> None:
        """Kill SuperNode ``node`` (with ``sig``) as soon as the server starts ``stage`` of
        ``round_index``."""
        progress = Path(out_dir).resolve() / "progress.jsonl"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and run.poll() is None:
            if progress.exists():
                for line in progress.read_text(encoding="utf-8").splitlines():
                    with contextlib.suppress(ValueError):
                        event = json.loads(line)
                        if (event.get("event") == "exchange" and event.get("round") == round_index
                                and event.get("stage") == stage):
                            self.kill_node(node, sig)
                            return
            time.sleep(0.05)
        raise FlowerRunError(f"the run never reached round {round_index}, stage {stage!r}")

    def logs(self, lines: int = 30) -> str:
        parts = []
        for path in sorted(self.log_dir.glob("*.log")):
            parts.append(f"--- {path.name} ---\n{_tail(path, lines)}")
        return "\n".join(parts)


def run_flower(config: RunConfig, out_dir: str | Path | None = None, *, mode: str = "sim",
               num_nodes: int | None = None, train_timeout: float | None = None,
               stage_timeout: float | None = None, timeout: float = 3600.0, work_dir: str | Path | None = None,
               kill_node: tuple[int, int, str] | None = None,
               aggregation: str = "ours", kill_signal: int = signal.SIGKILL) -> dict[str, Any]:
    """Run one job on Flower on this machine; returns (and writes) the metrics.json dict.

    ``mode="sim"``: Flower's simulation engine (Ray) with ``num_nodes`` virtual
    nodes. ``mode="deployment"``: a SuperLink and ``num_nodes`` SuperNode
    processes talking to it over loopback. ``train_timeout``/``stage_timeout``
    (seconds; 0 = derived from the measured reply times, :mod:`.deadlines`) bound how
    long a node may take before its users count
    as dropped. ``kill_node=(node, round, stage)`` (deployment only) SIGKILLs
    that SuperNode when the server starts that stage of that round (0-based
    round; stages ``advertise_keys`` (training), ``share_keys``,
    ``masked_input``, ``unmasking``, ``evaluate``) — the dropout drill;
    ``kill_signal`` is SIGKILL (a crash: Flower notices in ~45 s, so the
    stage timeout decides) or SIGTERM (a shutdown: an error reply in ~5 s).
    ``aggregation="flower-secagg+"`` runs the comparison with Flower's own
    SecAgg+ instead of our protocol (see :mod:`.secaggplus`).
    """
    # Unset arguments come from the run config's [flower] section, which the ServerApp reads.
    section = config.flower
    section = dataclasses.replace(
        section, nodes=section.nodes if num_nodes is None else num_nodes,
        train_timeout=section.train_timeout if train_timeout is None else train_timeout,
        stage_timeout=section.stage_timeout if stage_timeout is None else stage_timeout)
    section.validate()
    config = dataclasses.replace(config, flower=section)
    num_nodes = section.nodes
    if aggregation == "ours":
        from .coordinator import check_supported

        check_supported(config)
    elif config.privacy.unit != "none":
        raise ValueError("the comparison with Flower's SecAgg+ runs without differential privacy "
                         "(privacy.unit = 'none'): Flower's workflow has no place for our noise")
    if kill_node is not None and mode != "deployment":
        raise ValueError("kill_node needs mode='deployment' (simulated nodes are not processes)")
    cleanup = out_dir is None
    out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="sfr-flower-out-"))
    try:
        with _sigterm_as_exit(), LocalFederation(mode, num_nodes, work_dir,
                                                 aggregation=aggregation) as federation:
            run = federation.submit(config, out)
            if kill_node is not None:
                federation.kill_when(run, out, *kill_node, timeout=timeout, sig=kill_signal)
            return federation.wait(run, out, timeout)
    finally:
        if cleanup:
            shutil.rmtree(out, ignore_errors=True)


# -- CLI hook ----------------------------------------------------------------------------------
def register(subparsers: argparse._SubParsersAction) -> dict[str, Any]:
    """Add ``flower`` to ``secure-fedrec`` (``secure-fedrec flower --mode deployment --nodes 3``);
    returns ``{name: handler}`` as ``secure_fedrec.cli.COMMAND_MODULES`` expects."""
    p = subparsers.add_parser("flower", help="run a job on Flower (simulation or local deployment)")
    p.add_argument("--config", help="TOML run config (defaults for every missing key)")
    add_set_argument(p, example="--set training.rounds=2")
    p.add_argument("--out", required=True, help="output folder for metrics.json")
    p.add_argument("--mode", choices=("sim", "deployment"), default="sim")
    p.add_argument("--nodes", type=int, default=None,
                   help="virtual nodes / SuperNodes (default: flower.nodes of the config)")
    p.add_argument("--stage-timeout", type=float, default=None,
                   help="seconds a node may take per protocol stage before it counts as dropped "
                        "(default: flower.stage_timeout; 0: derived from the measured reply times)")
    p.add_argument("--train-timeout", type=float, default=None,
                   help="seconds a node may take to train (and to evaluate) (default: flower.train_timeout)")
    p.add_argument("--kill-node", metavar="NODE:ROUND:STAGE",
                   help="deployment drill: kill SuperNode NODE when the server starts STAGE of "
                        "ROUND (0-based), e.g. 2:0:share_keys")
    p.add_argument("--kill-signal", choices=("KILL", "TERM"), default="KILL",
                   help="the signal of --kill-node: KILL (a crash) or TERM (a shutdown)")
    p.add_argument("--aggregation", choices=sorted(COMPONENTS), default="ours",
                   help="ours: aggregation.protocol carried in Flower messages; flower-secagg+: "
                        "Flower's secaggplus_mod/SecAggPlusWorkflow, for comparison")
    p.set_defaults(handler=_cli_main)
    return {"flower": _cli_main}


def _cli_main(args: argparse.Namespace) -> int:
    from ...config import load_config

    config = load_config(args.config, dict(args.overrides))
    kill = None
    if args.kill_node:
        node, round_index, stage = args.kill_node.split(":")
        kill = (int(node), int(round_index), stage)
    try:
        result = run_flower(config, args.out, mode=args.mode, num_nodes=args.nodes,
                            train_timeout=args.train_timeout, stage_timeout=args.stage_timeout,
                            kill_node=kill, work_dir=os.environ.get("SFR_FLOWER_WORK_DIR") or None,
                            aggregation=args.aggregation,
                            kill_signal=getattr(signal, f"SIG{args.kill_signal}"))
    except (FlowerRunError, NotImplementedError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    final = result.get("final", {})
    print(json.dumps({"engine": result["engine"], "rounds": len(result["rounds"]),
                      "final": final, "out": str(args.out)}, indent=2))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m secure_fedrec.engines.flower.launcher")
    sub = parser.add_subparsers(dest="command", required=True)
    register(sub)
    args = parser.parse_args(argv)
    return int(args.handler(args))


if __name__ == "__main__":
    sys.exit(main())
