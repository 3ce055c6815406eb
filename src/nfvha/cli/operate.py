"""Operating a deployment: check it, run it, look at it (status, trace, alarms), break it
(fault)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from nfvha import config as cfg
from nfvha.cli.output import console, err, fail, load_config, print_timeline
from nfvha.lab import report
from nfvha.runtime import paths
from nfvha.runtime.control import ControlError, request
from nfvha.runtime.sdnotify import SdNotify, without_notify

commands = typer.Typer()  # merged into the top level
fault_app = typer.Typer(help="Inject faults into a running deployment.", no_args_is_help=True)

SocketOpt = Annotated[
    Path | None,
    typer.Option("--socket", help="Control socket of the deployment (default: the one running)."),
]


def find_socket(explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    found = paths.running_sockets()  # a crashed run's stale socket does not count
    if not found:
        raise fail(
            f"no running deployment found under {paths.runtime_base()} (start one with 'nfvha run')"
        )
    if len(found) > 1:
        names = ", ".join(p.parent.name for p in found)
        raise fail(f"several deployments are running ({names}); choose one with --socket")
    return found[0]


def call(sock: Path | None, payload: dict[str, Any]) -> dict[str, Any]:
    try:
        return request(find_socket(sock), payload)
    except ControlError as exc:
        raise fail(str(exc)) from None


# --- run ---------------------------------------------------------------------------------------


@commands.command()
def check(config: Annotated[Path, typer.Argument(help="Deployment file (YAML).")]) -> None:
    """Validate a deployment file; exit code 2 and the reason if it is not valid. Warnings
    (valid, but probably not meant) go to stderr and keep exit code 0."""
    deployment, base_dir = load_config(config)
    for warning in cfg.warnings(deployment):
        err.print(
            f"[yellow]warning:[/yellow] {config}: {escape(warning)}",
            highlight=False,
            soft_wrap=True,
        )
    running = paths.socket_answers(paths.control_socket(deployment.name))
    state = (base_dir / deployment.state_dir) if deployment.state_dir else None
    state = state or paths.default_state_dir(deployment.name)
    preflight_or_exit(config, deployment, base_dir, state, ports_held_ok=running)
    console.print(f"{config}: valid ({len(deployment.vnfs)} VNF)", highlight=False)


def preflight_or_exit(
    config: Path, dep: cfg.Deployment, base_dir: Path, state: Path, *, ports_held_ok: bool
) -> None:
    """Print what will fail (errors) or may (warnings); exit 2 on an error."""
    from nfvha.runtime.preflight import preflight

    findings = preflight(dep, base_dir, state, ports_held_ok=ports_held_ok)
    for f in findings:
        label = "[red]error:[/red]" if f.level == "error" else "[yellow]warning:[/yellow]"
        err.print(f"{label} {escape(f.line(config))}", highlight=False, soft_wrap=True)
    if any(f.level == "error" for f in findings):
        raise typer.Exit(2)


EXIT_DEPOSED = 3  # systemd restarts it (Restart=on-failure), and with --join it stands by


@commands.command()
def run(
    config: Annotated[Path, typer.Argument(help="Deployment file (YAML).")],
    trace: Annotated[
        Path | None, typer.Option(help="Also write the trace here (JSON lines).")
    ] = None,
    state_dir: Annotated[
        Path | None,
        typer.Option(
            help="Checkpoints and logs (default: state_dir, else ~/.local/state/nfvha/NAME)."
        ),
    ] = None,
    standby_manager: Annotated[
        bool,
        typer.Option(
            help="Keep a hot standby manager that takes over (and adopts every VNFC) if this "
            "one dies."
        ),
    ] = True,
    standby: Annotated[
        bool, typer.Option(hidden=True, help="Run as the standby: wait to lead.")
    ] = False,
    join: Annotated[
        bool,
        typer.Option(
            help="If the deployment is already led, join it as a standby manager (and tell "
            "systemd it is ready) instead of refusing: the systemd unit's mode, so that a "
            "restart after the leader died does not fail while its standby leads."
        ),
    ] = False,
    member: Annotated[
        str | None,
        typer.Option(
            help="With etcd coordination: this manager's host name in elections (default: the "
            "machine's); it is elected as HOST:PID."
        ),
    ] = None,
) -> None:
    """Run a deployment in the foreground until SIGINT or SIGTERM, then stop all it started.

    One manager leads (it holds a lock the kernel releases when it dies; with `coordination:
    etcd://...` also an etcd lease, and a leader whose lease is lost exits 3, stopping nothing);
    a hot standby manager waits and, if the leader dies, takes over and adopts the VNFCs, which
    keep serving meanwhile.
    """
    deployment, base_dir = load_config(config)
    sock = paths.control_socket(deployment.name)
    joined = not standby and join and paths.socket_answers(sock)
    if joined:
        standby = True  # a manager leads it: wait to lead, as its hot standby does
    elif not standby and paths.socket_answers(sock):  # a dead run's socket: its place is taken
        raise fail(f"deployment {deployment.name} is already running: {sock} answers")
    state = _state_dir(deployment, base_dir, state_dir)
    if not standby:  # a standby taking over must not be stopped by what changed since
        preflight_or_exit(config, deployment, base_dir, state, ports_held_ok=_left(deployment))
    again = [str(config), "--state-dir", str(state), *(["--trace", str(trace)] if trace else [])]
    again += ["--member", member] if member else []
    try:
        asyncio.run(
            _run(
                deployment,
                base_dir,
                state,
                trace,
                standby,
                again if standby_manager else None,
                config=config,
                joined=joined,
                member=member,
            )
        )
    except OSError as exc:
        raise fail(f"{deployment.name}: {exc}") from None


@commands.command()
def agent(
    config: Annotated[Path, typer.Argument(help="Deployment file (YAML).")],
    host: Annotated[str, typer.Option(help="The host this agent is: a name under `hosts`.")],
) -> None:
    """Run a host's agent (with `nfvi.host_agents: external`): one per host, started by the
    host (the unit `nfvha-agent@`), not by the VIM.

    It finds the leading manager through etcd (the NFVI endpoint the leader's term publishes),
    dials it with mutual TLS as this host (its certificate from `nfvha cluster init`), says
    hello, and starts the guests (VMs) the VIM asks for, reporting each one's exit. When the
    leader goes it dials whoever leads next, by itself; commands of an older leader are
    refused by their fencing token. It outlives every manager, as a host does; stopping it
    leaves its guests running.
    """
    from nfvha.agents.agent import Agent
    from nfvha.agents.finder import LeaderFinder, endpoint_key
    from nfvha.drivers import tls

    deployment, base_dir = load_config(config)
    spec = deployment.nfvi
    if spec.host_agents != "external":
        raise fail(f"{config}: nfvi.host_agents is {spec.host_agents}: the VIM starts the host "
                   "agents itself (set it to external to run them per host)", code=2)  # fmt: skip
    if host not in (hosts := [h.name for h in deployment.hosts]):
        raise fail(f"{config}: hosts: no host named {host!r} (hosts: {', '.join(hosts)})", code=2)
    cluster = base_dir / (spec.cluster_dir or "")
    try:
        tls.client_context(cluster, host)
    except tls.TlsSetupError as exc:
        raise fail(f"{config}: nfvi.cluster_dir: {exc}", code=2) from None
    coordination = deployment.coordination
    key = endpoint_key(coordination.prefix, deployment.name)
    finder = LeaderFinder(coordination.endpoints, key, cluster, host, host)
    host_agent = Agent("host", host, "", spec.heartbeat_interval_ms, find=finder)
    err.print(f"nfvha: host agent {host} of {deployment.name}: finding the leader in etcd")
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(host_agent.run())


@commands.command()
def manager(
    config: Annotated[Path, typer.Argument(help="Deployment file (YAML).")],
    member: Annotated[
        str | None,
        typer.Option(help="This instance's host name in elections (default: the machine's)."),
    ] = None,
    trace: Annotated[
        Path | None, typer.Option(help="Also write the trace here (JSON lines).")
    ] = None,
    state_dir: Annotated[
        Path | None, typer.Option(help="Checkpoints and logs (as for run).")
    ] = None,
) -> None:
    """Run one instance of a deployment's managers (VIM, VNFM, HA managers): it leads if none
    does, else it stands by and takes over when the leader dies, adopting what runs.

    Start one per machine, each with the same configuration (with `coordination: etcd://...`
    for instances on several machines); the leader's own hot standby is not started, the other
    instances are the standbys. SIGINT or SIGTERM stops a standby without touching the
    deployment, and the leader with everything it started, as for run.
    """
    deployment, base_dir = load_config(config)
    state = _state_dir(deployment, base_dir, state_dir)
    try:
        asyncio.run(
            _run(
                deployment,
                base_dir,
                state,
                trace,
                True,
                None,
                config=config,
                joined=True,
                member=member,
            )
        )
    except OSError as exc:
        raise fail(f"{deployment.name}: {exc}") from None


def _state_dir(deployment: cfg.Deployment, base_dir: Path, explicit: Path | None) -> Path:
    if explicit is not None:
        return explicit
    if deployment.state_dir:
        return base_dir / deployment.state_dir
    return paths.default_state_dir(deployment.name)


def _ready_while_waiting() -> asyncio.Future[None] | None:
    """A manager that joined a running deployment (``--join``) is ready at once: the services
    are up under the leader; its watchdog pings show that it is alive, waiting to lead."""
    from nfvha.runtime.sdnotify import SdNotify

    systemd = SdNotify.from_env()
    if systemd is None:
        return None
    started = asyncio.Event()
    started.set()
    return asyncio.ensure_future(systemd.run(started, lambda: True))


async def _run(
    deployment: cfg.Deployment,
    base_dir: Path,
    state_dir: Path,
    trace_path: Path | None,
    standby: bool,
    standby_args: list[str] | None,
    config: Path | None = None,
    joined: bool = False,
    member: str | None = None,
) -> None:
    from nfvha.runtime.engine import Engine
    from nfvha.runtime.trace import Trace

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    trace = Trace(trace_path)
    leadership = _leadership(deployment, member, trace)
    try:
        await _take_lead(deployment, leadership, standby, joined, stop)
    except BaseException:
        trace.close()
        await leadership.close()
        raise
    if stop.is_set():
        trace.close()
        await leadership.close()
        return
    engine = Engine(deployment, base_dir, trace, state_dir)
    engine.leadership = leadership
    engine.config_path = config  # read again by `nfvha reload`
    if not standby:
        err.print(
            f"nfvha: running {deployment.name}; control socket "
            f"{engine.runtime_dir / 'control.sock'}; logs in {state_dir / 'logs'}. "
            "Ctrl-C stops it.",
            highlight=False,
        )
    standbys = StandbyManager(standby_args) if standby_args is not None else None
    engine_stop = asyncio.Event()
    # Only the leader speaks for the unit; one that joined it (--join) is the unit's own process.
    systemd = None if standby and not joined else SdNotify.from_env()
    notifying = (
        asyncio.ensure_future(systemd.run(engine.started, engine.all_up)) if systemd else None
    )

    async def stop_in_order() -> None:
        """A deliberate stop: the standby first (it must not take over), then everything."""
        await stop.wait()
        if systemd is not None:
            systemd.send("STOPPING=1")
        if standbys is not None:
            await standbys.stop()
        engine_stop.set()

    stopper = asyncio.ensure_future(stop_in_order())
    try:
        if standbys is not None:
            standbys.start()
        await engine.run(engine_stop)
    finally:
        stopper.cancel()
        if notifying:
            notifying.cancel()
        if standbys is not None:
            await standbys.stop()
        trace.close()
        await leadership.close()  # stopped on purpose: nothing left behind
    err.print(
        f"nfvha: {deployment.name} stopped; every process it started is gone.", highlight=False
    )


def _leadership(deployment: cfg.Deployment, member: str | None, trace: Any) -> Any:
    """The deployment's leadership; a leader that etcd deposes leaves at once (ADR 014). Its
    own release at a deliberate stop is not a deposition (``leadership.stopping``)."""
    import socket

    from nfvha.runtime import leadership as leaders

    def changed(change: Any) -> None:
        if leadership.stopping:
            return
        data = {"member": change.member, "token": change.token, "leading": change.leading}
        name = "Leading" if change.leading else "Deposed"
        trace.record("note", name, src="nfvha", data=data, why=change.why)
        if not change.leading:
            _leave_deposed(deployment.name, change.why, trace)

    host = member or socket.gethostname()
    leadership = leaders.for_deployment(deployment.name, deployment.coordination, host, changed)
    return leadership


def _leave_deposed(name: str, why: str, trace: Any) -> None:
    """A deposed leader must not act once more: it leaves now, the way a crash does, and every
    VNFC, host and VM it ran keeps running for the next leader to adopt (a deliberate stop
    would stop them). Its standby, or systemd's restart with --join, leads next."""
    err.print(
        f"nfvha: {name}: deposed ({why}); leaving everything to the next leader", highlight=False
    )
    trace.close()
    sys.stderr.flush()
    os._exit(EXIT_DEPOSED)


async def _take_lead(
    deployment: cfg.Deployment,
    leadership: Any,
    standby: bool,
    joined: bool,
    stop: asyncio.Event,
) -> None:
    if standby:
        err.print(f"nfvha: standby manager of {deployment.name}: waiting to lead", highlight=False)
        waiting = _ready_while_waiting() if joined else None
        from nfvha.runtime import nodes

        try:
            await asyncio.to_thread(nodes.prepare, deployment)  # off the takeover's path
            if not await leadership.wait_to_lead(stop):
                return
        finally:
            if waiting is not None:
                waiting.cancel()
        err.print(f"nfvha: taking over {deployment.name}", highlight=False)
        return
    from nfvha.sdk.stores import StoreUnavailable

    try:
        if not await leadership.lead_at_start():
            raise OSError("another manager leads this deployment")
    except (StoreUnavailable, TimeoutError) as exc:
        raise OSError(f"no leadership from etcd: {exc or 'no election in time'}") from None


def _left(dep: cfg.Deployment) -> bool:
    """Whether a run that died left VNFCs (to adopt or remove): they may hold the ports."""
    from nfvha.drivers import leftovers

    try:
        return bool(leftovers.read_record(paths.runtime_dir(dep.name) / leftovers.RECORD))
    except OSError:
        return True  # a record nfvha cannot read: the engine says so


class StandbyManager:
    """The leader's hot standby: ``nfvha run --standby`` in a session of its own, started
    again if it dies."""

    def __init__(self, args: list[str]) -> None:
        self.args = args
        self.proc: asyncio.subprocess.Process | None = None
        self._keeper: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._keeper = asyncio.ensure_future(self._keep())

    async def _keep(self) -> None:
        while True:
            self.proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "nfvha",
                "run",
                *self.args,
                "--standby",
                stdin=asyncio.subprocess.DEVNULL,
                start_new_session=True,
                env=without_notify(os.environ),  # the leader alone notifies systemd
            )
            await self.proc.wait()
            await asyncio.sleep(1.0)  # it died: another one, but never in a tight loop

    async def stop(self) -> None:
        if self._keeper is not None:
            self._keeper.cancel()
            self._keeper = None
        proc, self.proc = self.proc, None
        if proc is not None and proc.returncode is None:
            proc.terminate()
            await proc.wait()


# --- look --------------------------------------------------------------------------------------


@commands.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    socket: SocketOpt = None,
    from_etcd: Annotated[
        Path | None,
        typer.Option(
            "--from-etcd",
            metavar="CONFIG",
            help="Read what the leader recorded in etcd (the deployment file's coordination) "
            "instead of asking a manager on this machine: from any machine, even while nobody "
            "leads.",
        ),
    ] = None,
) -> None:
    """Show each VNF, its VNFCs (role, state, pid) and its service (address, active VNFC).

    Exit codes, as a Nagios/Icinga check reads them:
    0 OK;
    1 WARNING: degraded (no standby holds the state), store failing, or a VNFC being recovered;
    with --from-etcd also: nobody leads (the records are the last term's);
    2 CRITICAL: a service down, or a VNFC escalated;
    3 UNKNOWN: no deployment reachable (with --from-etcd: etcd unreachable).
    """
    if from_etcd is not None:
        raise typer.Exit(_status_from_etcd(from_etcd, as_json))
    try:
        answer = call(socket, {"op": "status"})
    except typer.Exit:
        raise typer.Exit(UNKNOWN) from None  # the reason is printed already
    answer.pop("ok")
    code = health_code(answer)
    if as_json:
        print(json.dumps(answer, indent=2))
        raise typer.Exit(code)
    console.print(
        f"deployment [bold]{answer['deployment']}[/bold]  manager pid {answer.get('manager_pid')}",
        highlight=False,
    )
    if line := leader_line(answer.get("leader", {})):
        console.print(line, highlight=False)
    if line := hosts_line(answer.get("nfvi", {})):
        console.print(line, highlight=False)
    if (network := answer.get("network", {})).get("mode") == "netns":
        console.print(
            f"network netns {network['subnet']}  consumers: ip netns exec "
            f"{network['consumer_netns']} ...",
            highlight=False,
        )
    for vnf in answer["vnfs"]:
        svc = vnf["service"]
        health = "[green]up[/green]" if svc["up"] else "[red]DOWN[/red]"
        extra = " (degraded: no standby holds the state)" if vnf["degraded"] else ""
        if vnf.get("store_error"):
            extra += f" [red](checkpoint store failed: {vnf['store_error']}; writes refused)[/red]"
        sync = f", {vnf['state_sync']} sync" if vnf.get("state_sync") else ""
        console.print(
            f"VNF [bold]{vnf['vnf']}[/bold]  model {vnf['model']}  state {vnf['state']}{sync}"
            f"{extra}\n"
            f"  service {svc['name']} {svc['protocol']}://{svc.get('reach', svc['address'])}"
            f"  {health}  active: {', '.join(svc['active']) or '-'}"
            + (f"  VIP held by {svc['vip_holder'] or '-'}" if svc.get("vip_holder") else ""),
            highlight=False,
        )
        placement = answer.get("placement", {})
        vm_host = answer.get("nfvi", {}).get("vms", {})
        agents = answer.get("nfvi", {}).get("agents", {})
        columns = ["VNFC", "role", "state", "pid", "failures", "last failure"]
        table = Table(*columns, *(["VM (host)"] if placement else []))
        for c in vnf["vnfcs"]:
            state = f"[red]{c['state']}[/red]" if c["state"] == "escalated" else c["state"]
            where = []
            if placement:
                vm = placement[c["name"]]
                lease = agents.get(vm, {}).get("lease_remaining_ms")
                held = f", lease {lease / 1000:.1f} s" if lease is not None else ""
                where = [f"{vm} ({vm_host[vm]['host']}, {vm_host[vm]['state']}{held})"]
            table.add_row(
                c["name"],
                c["role"],
                state,
                str(c["pid"] or "-"),
                str(c["failures"]),
                c["last_failure"],
                *where,
            )
        console.print(table)
        if pool := answer.get("pools", {}).get(vnf["vnf"]):
            console.print(pool_line(pool), highlight=False)
    for esc in answer["escalations"]:
        console.print(
            f"[red]escalated:[/red] {esc['vnfc']} of {esc['vnf']}: {esc['reason']}", highlight=False
        )
    raise typer.Exit(code)


def _status_from_etcd(config: Path, as_json: bool) -> int:
    from nfvha.runtime.etcd_leadership import read_recorded
    from nfvha.sdk.stores import StoreUnavailable

    deployment, _ = load_config(config)
    coordination = deployment.coordination
    if coordination.backend != "etcd":
        raise fail(f"{config}: coordination: {coordination.backend}: nothing is recorded in "
                   "etcd (--from-etcd needs coordination: etcd://...)", code=2)  # fmt: skip
    prefix = f"{coordination.prefix}/{deployment.name}"
    try:
        answer = asyncio.run(read_recorded(coordination.endpoints, prefix))
    except StoreUnavailable as exc:
        err.print(f"nfvha: etcd does not answer: {exc}", highlight=False)
        return UNKNOWN
    answer = {"deployment": deployment.name, "prefix": prefix, **answer}
    code = recorded_health_code(answer)
    if as_json:
        print(json.dumps(answer, indent=2))
        return code
    for line in recorded_lines(answer):
        console.print(line, highlight=False)
    return code


def recorded_lines(answer: dict[str, Any]) -> list[str]:
    """``nfvha status --from-etcd``: the leader, then each recorded VNF, host and VM."""
    leader = answer["leader"]
    who = f"{leader['member']}  token {leader['token']}" if leader else "nobody leads"
    lines = [f"deployment {answer['deployment']}  recorded in etcd under {answer['prefix']}/",
             f"leader {who}  (VNFCs run by {answer['deployed_by'] or 'nobody'})"]  # fmt: skip
    records = answer["records"]
    for name, vnf in sorted(records.items()):
        kind, _, what = name.partition("/")
        if kind == "vnfs":
            lines.append(f"VNF {what}  epoch {vnf.get('epoch')}  "
                         f"active: {', '.join(vnf.get('active') or []) or '-'}")  # fmt: skip
            for vnfc, c in sorted(vnf.get("vnfcs", {}).items()):
                failed = f"  last failure: {c['last_failure']}" if c.get("last_failure") else ""
                lines.append(f"  {vnfc}  {c.get('role')}  {c.get('state')}{failed}")
    hosts = [f"{n.partition('/')[2]} {r.get('state')}" for n, r in sorted(records.items())
             if n.startswith("hosts/")]  # fmt: skip
    if hosts:
        lines.append("hosts  " + "  ".join(hosts))
    vms = [f"{n.partition('/')[2]} {r.get('state')} on {r.get('host')}"
           for n, r in sorted(records.items()) if n.startswith("vms/")]  # fmt: skip
    if vms:
        lines.append("VMs  " + "  ".join(vms))
    lines += [f"refused: record {name} is not a JSON object" for name in answer["malformed"]]
    return lines


def recorded_health_code(answer: dict[str, Any]) -> int:
    """As ``health_code``, from the records; nobody leading is a warning at least."""
    vnfs = [r for n, r in answer["records"].items() if n.startswith("vnfs/")]
    if not vnfs:
        return UNKNOWN  # nothing recorded: no deployment runs (or it stopped)
    states = {c.get("state") for v in vnfs for c in v.get("vnfcs", {}).values()}
    if "escalated" in states or any(not v.get("active") for v in vnfs):
        return CRITICAL
    if states & {"starting", "failed"} or answer["leader"] is None:
        return WARNING
    return OK


def leader_line(leader: dict[str, Any]) -> str:
    """How the deployment is led: ``leader etcd vm:4242  token 7  lease 1.8 s of 2 s left``."""
    if leader.get("coordination") == "etcd":
        left = leader["lease_remaining_ms"] / 1000
        return (
            f"leader etcd {leader['member']}  token {leader['token']}  lease {left:.1f} s of "
            f"{leader['lease_ttl_s']} s left  ({leader['key']})"
            + (f"  {leader['state_records']} state records" if "state_records" in leader else "")
        )
    if leader.get("coordination") == "embedded":
        return f"leader embedded (lock {leader['lock']})  token {leader['token']}"
    return ""


def hosts_line(nfvi: dict[str, Any]) -> str:
    """Each host: its state, whether its agent is connected and, with watchdog fencing, its
    lease (``hosts  host-1 up, lease 1.9 s  host-2 failed, not connected, lease 0.0 s``)."""
    parts = []
    for host, state in nfvi.get("hosts", {}).items():
        agent = nfvi.get("host_agents", {}).get(host, {})
        words = [f"{host} {state}"]
        if agent and not agent.get("connected"):
            words.append("not connected")
        if (lease := agent.get("lease_remaining_ms")) is not None:
            words.append(f"lease {lease / 1000:.1f} s")
        parts.append(", ".join(words))
    return ("hosts  " + "  ".join(parts)) if parts else ""


def pool_line(pool: dict[str, Any]) -> str:
    """A load-balanced VNF's pool: each server as it should be, and each HAProxy instance's
    pool as last read from it (a server out of line is shown with the instance's state)."""
    desired = {s: m["state"] for s, m in pool["desired"].items()}
    want = " ".join(f"{s}={st}" for s, st in desired.items())
    seen = []
    for inst, actual in pool["instances"].items():
        if actual is None:
            seen.append(f"{inst}: not answering")
            continue
        off = {s: st for s, st in actual.items() if desired.get(s) != st}
        seen.append(f"{inst}: " + (" ".join(f"{s}={st}" for s, st in off.items()) or "in line"))
    return f"  pool (via {pool['lb']}): {want}  |  " + ", ".join(seen)


OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3  # the Nagios plugin exit codes


def health_code(answer: dict[str, Any]) -> int:
    """The status as one exit code: the worst thing the status shows."""
    vnfs = answer["vnfs"]
    states = {c["state"] for vnf in vnfs for c in vnf["vnfcs"]}
    if answer["escalations"] or "escalated" in states or any(not v["service"]["up"] for v in vnfs):
        return CRITICAL
    # A stopped VNFC is no warning: an on-demand spare waits stopped.
    if states & {"starting", "failed"} or any(v["degraded"] or v.get("store_error") for v in vnfs):
        return WARNING
    return OK


@commands.command("trace")
def trace_cmd(
    file: Annotated[
        Path | None,
        typer.Option("--file", help="Read a trace file instead of the running deployment."),
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print the raw records as JSON lines.")
    ] = False,
    socket: SocketOpt = None,
) -> None:
    """Print the recorded timeline: events, commands, messages, faults, with the manager's why."""
    from nfvha.runtime.trace import load

    if file is not None:
        try:
            records = list(load(file))
        except (OSError, ValueError) as exc:
            raise fail(f"{file}: cannot read trace: {exc}") from None
    else:
        records = call(socket, {"op": "trace"})["records"]
    if as_json:
        for rec in records:
            print(json.dumps(rec))
        return
    if not records:
        return
    print_timeline(report.timeline(records, records[0]["t"]))


# --- faults ------------------------------------------------------------------------------------


def _fault(kind: str, target: str, socket: Path | None) -> None:
    answer = call(socket, {"op": "fault", "kind": kind, "target": target})
    pid = f" (pid {answer['pid']})" if "pid" in answer else ""
    console.print(f"{kind}: {target}{pid}", highlight=False)


# One command per kind of nfvha.faults.RUNTIME; the 0.1 names (faults.ALIASES) stay as hidden
# commands for one release.
@fault_app.command("vnfc-crash")
@fault_app.command("kill", hidden=True)
def fault_vnfc_crash(
    vnfc: Annotated[str, typer.Argument(help="VNFC name.")], socket: SocketOpt = None
) -> None:
    """Crash a VNFC: SIGKILL to its process."""
    _fault("vnfc-crash", vnfc, socket)


@fault_app.command("vnfc-hang")
@fault_app.command("hang", hidden=True)
def fault_vnfc_hang(
    vnfc: Annotated[str, typer.Argument(help="VNFC name.")], socket: SocketOpt = None
) -> None:
    """Hang a VNFC: SIGSTOP; only its health check can tell."""
    _fault("vnfc-hang", vnfc, socket)


@fault_app.command("vnfc-resume")
@fault_app.command("resume", hidden=True)
def fault_vnfc_resume(
    vnfc: Annotated[str, typer.Argument(help="VNFC name.")], socket: SocketOpt = None
) -> None:
    """End a VNFC's hang: SIGCONT (too late if its health check has failed it already)."""
    _fault("vnfc-resume", vnfc, socket)


@fault_app.command("vm-crash")
@fault_app.command("crash-vm", hidden=True)
def fault_vm_crash(
    vm: Annotated[str, typer.Argument(help="VM name.")], socket: SocketOpt = None
) -> None:
    """Crash a VM: its guest agent and every VNFC in it die at once (cgroup.kill)."""
    _fault("vm-crash", vm, socket)


@fault_app.command("vm-hang")
@fault_app.command("hang-vm", hidden=True)
def fault_vm_hang(
    vm: Annotated[str, typer.Argument(help="VM name.")], socket: SocketOpt = None
) -> None:
    """Hang a VM: freeze its guest and VNFCs (cgroup.freeze); only heartbeats tell."""
    _fault("vm-hang", vm, socket)


@fault_app.command("host-crash")
@fault_app.command("crash-host", hidden=True)
def fault_host_crash(
    host: Annotated[str, typer.Argument(help="Host name.")], socket: SocketOpt = None
) -> None:
    """Crash a host: its host agent, guests and VNFCs die at once; only heartbeats tell."""
    _fault("host-crash", host, socket)


@fault_app.command("flap")
def fault_flap(
    vnfc: Annotated[str, typer.Argument(help="VNFC name.")],
    times: Annotated[int, typer.Option(min=1, help="How many kills.")] = 3,
    every: Annotated[float, typer.Option(min=0.05, help="Seconds between kills.")] = 1.0,
    socket: SocketOpt = None,
) -> None:
    """Kill a VNFC N times, S seconds apart (it must be running at each kill): escalation."""
    import time

    for i in range(times):
        if i:
            time.sleep(every)
        try:
            _fault("vnfc-crash", vnfc, socket)
        except typer.Exit:
            console.print(f"{vnfc} is not running (escalated or being repaired); stopping")
            raise


@commands.command()
def alarms(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    socket: SocketOpt = None,
) -> None:
    """The VIM's alarms and log: hosts and VMs failed, fenced, repaired."""
    answer = call(socket, {"op": "status"})
    nfvi = answer.get("nfvi")
    if nfvi is None:
        raise fail("this deployment has no hosts or VMs, so no VIM and no alarms")
    if as_json:
        print(json.dumps(nfvi, indent=2))
        return
    console.print(
        "hosts: " + ", ".join(f"{h} {s}" for h, s in nfvi["hosts"].items()), highlight=False
    )
    for name, vm in nfvi["vms"].items():
        console.print(f"  {name} on {vm['host']} ({vm['vnf']}): {vm['state']}", highlight=False)
    table = Table("time", "entity", "severity", "text")
    for alarm in nfvi["alarms"]:
        stamp = datetime.fromtimestamp(alarm["t"]).strftime("%H:%M:%S.%f")[:-3]
        table.add_row(stamp, alarm["entity"], alarm["severity"], alarm["text"])
    console.print(table)
