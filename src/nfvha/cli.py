"""The operator's command line: run a deployment, look at it, break it, measure it."""

from __future__ import annotations

import asyncio
import json
import signal
import sys
from datetime import datetime
from enum import StrEnum
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import typer
import yaml
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from nfvha import config as cfg
from nfvha.lab import report
from nfvha.runtime import paths
from nfvha.runtime.control import ControlError, request

app = typer.Typer(
    help="nfvha: availability manager for network functions. "
    "Runs VNFs with redundancy, detects failures, isolates, fails over, repairs, and measures "
    "the outage from the consumer's side.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
fault_app = typer.Typer(help="Inject faults into a running deployment.", no_args_is_help=True)
app.add_typer(fault_app, name="fault")
console = Console()
err = Console(stderr=True)

SocketOpt = Annotated[
    Path | None,
    typer.Option("--socket", help="Control socket of the deployment (default: the one running)."),
]


def fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def load_config(path: Path) -> tuple[cfg.Deployment, Path]:
    try:
        return cfg.load(path)
    except cfg.ConfigError as exc:
        raise fail(str(exc), code=2) from None


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


@app.command()
def check(config: Annotated[Path, typer.Argument(help="Deployment file (YAML).")]) -> None:
    """Validate a deployment file; exit code 2 and the reason if it is not valid."""
    deployment, _ = load_config(config)
    console.print(f"{config}: valid ({len(deployment.vnfs)} VNF)", highlight=False)


@app.command()
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
) -> None:
    """Run a deployment in the foreground until SIGINT or SIGTERM, then stop all it started."""
    deployment, base_dir = load_config(config)
    sock = paths.control_socket(deployment.name)
    if paths.socket_answers(sock):  # a stale socket of a run that died: its place is taken
        raise fail(f"deployment {deployment.name} is already running: {sock} answers")
    state = state_dir or (
        (base_dir / deployment.state_dir)
        if deployment.state_dir
        else paths.default_state_dir(deployment.name)
    )
    try:
        asyncio.run(_run(deployment, base_dir, state, trace))
    except OSError as exc:
        raise fail(f"{deployment.name}: {exc}") from None


async def _run(
    deployment: cfg.Deployment, base_dir: Path, state_dir: Path, trace_path: Path | None
) -> None:
    from nfvha.runtime.engine import Engine
    from nfvha.runtime.trace import Trace

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    trace = Trace(trace_path)
    engine = Engine(deployment, base_dir, trace, state_dir)
    err.print(
        f"nfvha: running {deployment.name}; control socket {engine.runtime_dir / 'control.sock'}; "
        f"logs in {state_dir / 'logs'}. Ctrl-C stops it.",
        highlight=False,
    )
    try:
        await engine.run(stop)
    finally:
        trace.close()
    err.print(
        f"nfvha: {deployment.name} stopped; every process it started is gone.", highlight=False
    )


# --- look --------------------------------------------------------------------------------------


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    socket: SocketOpt = None,
) -> None:
    """Show each VNF, its VNFCs (role, state, pid) and its service (address, active VNFC)."""
    answer = call(socket, {"op": "status"})
    answer.pop("ok")
    if as_json:
        print(json.dumps(answer, indent=2))
        return
    for vnf in answer["vnfs"]:
        svc = vnf["service"]
        health = "[green]up[/green]" if svc["up"] else "[red]DOWN[/red]"
        extra = " (degraded: no standby holds the state)" if vnf["degraded"] else ""
        if vnf.get("store_error"):
            extra += f" [red](checkpoint store failed: {vnf['store_error']}; writes refused)[/red]"
        console.print(
            f"VNF [bold]{vnf['vnf']}[/bold]  model {vnf['model']}  state {vnf['state']}{extra}\n"
            f"  service {svc['name']} {svc['protocol']}://{svc['address']}  {health}  "
            f"active: {', '.join(svc['active']) or '-'}",
            highlight=False,
        )
        placement = answer.get("placement", {})
        vm_host = answer.get("nfvi", {}).get("vms", {})
        columns = ["VNFC", "role", "state", "pid", "failures", "last failure"]
        table = Table(*columns, *(["VM (host)"] if placement else []))
        for c in vnf["vnfcs"]:
            state = f"[red]{c['state']}[/red]" if c["state"] == "escalated" else c["state"]
            where = []
            if placement:
                vm = placement[c["name"]]
                where = [f"{vm} ({vm_host[vm]['host']}, {vm_host[vm]['state']})"]
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
    for esc in answer["escalations"]:
        console.print(
            f"[red]escalated:[/red] {esc['vnfc']} of {esc['vnf']}: {esc['reason']}", highlight=False
        )


@app.command("trace")
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


def print_timeline(rows: list[dict[str, Any]]) -> None:
    """One line per record: time, phase, who to whom, what; the manager's why indented below."""
    for row in rows:
        arrow = f"{row['src']} → {row['dst']}" if row["dst"] else row["src"]
        console.print(
            f"{row['ms']:+10.3f} ms  [bold]{row['phase']:<12}[/bold] {arrow:<26} {row['what']}",
            highlight=False,
            soft_wrap=True,
        )
        if row["why"]:
            console.print(f"{'':>27}[dim]why: {row['why']}[/dim]", highlight=False, soft_wrap=True)


# --- faults ------------------------------------------------------------------------------------


def _fault(kind: str, target: str, socket: Path | None) -> None:
    answer = call(socket, {"op": "fault", "kind": kind, "target": target})
    pid = f" (pid {answer['pid']})" if "pid" in answer else ""
    console.print(f"{kind}: {target}{pid}", highlight=False)


@fault_app.command("kill")
def fault_kill(
    vnfc: Annotated[str, typer.Argument(help="VNFC name.")], socket: SocketOpt = None
) -> None:
    """Crash a VNFC: SIGKILL to its process."""
    _fault("kill", vnfc, socket)


@fault_app.command("hang")
def fault_hang(
    vnfc: Annotated[str, typer.Argument(help="VNFC name.")], socket: SocketOpt = None
) -> None:
    """Hang a VNFC: SIGSTOP; only its health check can tell."""
    _fault("hang", vnfc, socket)


@fault_app.command("crash-vm")
def fault_crash_vm(
    vm: Annotated[str, typer.Argument(help="VM name.")], socket: SocketOpt = None
) -> None:
    """Crash a VM: its guest agent and every VNFC in it die at once (cgroup.kill)."""
    _fault("crash-vm", vm, socket)


@fault_app.command("hang-vm")
def fault_hang_vm(
    vm: Annotated[str, typer.Argument(help="VM name.")], socket: SocketOpt = None
) -> None:
    """Hang a VM: freeze its guest and VNFCs (cgroup.freeze); only heartbeats tell."""
    _fault("hang-vm", vm, socket)


@fault_app.command("crash-host")
def fault_crash_host(
    host: Annotated[str, typer.Argument(help="Host name.")], socket: SocketOpt = None
) -> None:
    """Crash a host: its host agent, guests and VNFCs die at once; only heartbeats tell."""
    _fault("crash-host", host, socket)


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
            _fault("kill", vnfc, socket)
        except typer.Exit:
            console.print(f"{vnfc} is not running (escalated or being repaired); stopping")
            raise


@app.command()
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


# --- measure -----------------------------------------------------------------------------------


class Op(StrEnum):
    INC = "INC"
    GET = "GET"


@app.command()
def probe(
    target: Annotated[str, typer.Argument(help="udp://HOST:PORT of the service.")],
    interval_ms: Annotated[float, typer.Option(help="Milliseconds between requests.")] = 1.0,
    duration: Annotated[
        float, typer.Option(help="Seconds to run (SIGINT or SIGTERM stops it earlier, reporting).")
    ] = 5.0,
    op: Annotated[Op, typer.Option(help="Request to send.")] = Op.INC,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    answers_out: Annotated[
        Path | None, typer.Option(help="Write every good answer as CSV: t_ns,seq,total,vnfc.")
    ] = None,
    sockets: Annotated[
        int,
        typer.Option(min=1, help="Source ports to send from in turn (SO_REUSEPORT spreads them)."),
    ] = 4,
) -> None:
    """Act as the consumer: measure outage, lost acknowledged increments, and who answered."""
    from nfvha.lab import probe as probe_mod

    signal.signal(signal.SIGTERM, signal.default_int_handler)  # SIGTERM stops it like Ctrl-C
    try:
        if answers_out:
            with open(answers_out, "w") as out:
                result = probe_mod.run(
                    target, interval_ms, duration, op.value, answers_out=out, sockets=sockets
                )
        else:
            result = probe_mod.run(target, interval_ms, duration, op.value, sockets=sockets)
    except probe_mod.ProbeError as exc:
        raise fail(str(exc), code=2) from None
    if as_json:
        print(json.dumps(result.to_json()))
        return
    order = " → ".join(r.vnfc for r in result.runs) or "nobody"
    console.print(
        f"sent {result.sent}, good answers {result.answered}, errors {result.errors}\n"
        f"outage (longest gap between good answers): {result.outage_ms:.1f} ms\n"
        f"lost acknowledged increments: {result.lost}\n"
        f"answered by: {order}\n"
        f"two actives (interleaved answers): {'YES' if result.interleaved else 'no'}",
        highlight=False,
    )


# --- demo --------------------------------------------------------------------------------------


class Model(StrEnum):
    two_n = "2n"
    n_plus_m = "n+m"
    none = "none"


EXAMPLE_FOR = {
    "2n": "counter-2n.yaml",
    "n+m": "counter-stateless.yaml",
    "none": "counter-single.yaml",
}


def example_path(model: str) -> Path:
    return Path(str(resources.files("nfvha.examples") / EXAMPLE_FOR[model]))


@app.command()
def demo(
    model: Annotated[Model, typer.Option(help="Which example to run.")] = Model.two_n,
    hang: Annotated[
        bool, typer.Option("--hang", help="Hang the active (SIGSTOP) instead of killing it.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Run the counter example, drive traffic, fail the active, and show what happened."""
    from nfvha.lab.experiment import run_faults

    path = example_path(model.value)
    deployment, base_dir = load_config(path)
    fault = "hang" if hang else "kill"
    if not as_json:
        console.print(
            f"[bold]nfvha demo[/bold]: {deployment.name} ({path.name}), model {model.value}. "
            f"A probe sends 'INC' every 1 ms to udp://{deployment.vnfs[0].service.address}; "
            f"after 0.5 s the active VNFC gets a {fault}.",
            highlight=False,
        )
    exp = asyncio.run(run_faults(deployment, base_dir, faults=1, fault=fault, spacing_s=1.5))
    outcome = exp.faults[0]
    outage = outcome.outage_ms if outcome.answered else float("inf")
    result = report.verdict(outage, exp.probe["lost"], exp.probe["interleaved"])
    if as_json:
        print(json.dumps({**exp.summary(), "verdict": result}))
        return
    rows = report.timeline(
        exp.records,
        outcome.fault_ns,
        (outcome.failover_from_ns, outcome.failover_to_ns),
        longest=(outcome.last_good_ns, outcome.first_good_ns),
    )
    rows = [r for r in rows if r["ms"] >= -0.5 or r["phase"] == "consumer"]
    console.print("\n[bold]What happened[/bold] (ms from the fault; from the trace and the probe):")
    print_timeline(rows)
    p = outcome.phases_ms
    console.print(
        "\n[bold]Recovery phases[/bold] (ms after the fault): "
        + ", ".join(f"{k} {v:.2f}" for k, v in p.items()),
        highlight=False,
    )
    order = " → ".join(f"{r['vnfc']} ({r['count']})" for r in exp.probe["runs"])
    mark = "[green]PASS[/green]" if result["pass"] else "[red]FAIL[/red]"
    console.print(
        f"\n[bold]Consumer's view[/bold]: {exp.probe['sent']} requests, "
        f"{exp.probe['answered']} good answers; "
        f"answered by {order}\n"
        f"  outage (longest silence after the fault): {outage:.2f} ms"
        + ("" if outcome.answered else " (no answer after the fault)")
        + f"   lost acknowledged increments: {exp.probe['lost']}   "
        f"two actives: {'YES' if exp.probe['interleaved'] else 'no'}\n"
        f"  verdict: {mark} sub-second target {'met' if result['sub_second'] else 'MISSED'}; "
        f"end-to-end band {result['sal']}",
        highlight=False,
    )
    if not result["pass"]:
        raise typer.Exit(1)


# --- scenarios ---------------------------------------------------------------------------------

scenario_app = typer.Typer(
    help="The seed's use cases UC1-UC9: run them with the probe, check the sequence.",
    no_args_is_help=True,
)
app.add_typer(scenario_app, name="scenario")


@scenario_app.command("list")
def scenario_list() -> None:
    """List the scenarios."""
    from nfvha.lab import scenario as sc

    for name in sc.names():
        s = sc.load(name)
        console.print(f"{name:<5} {s.title}  [dim]({s.seed})[/dim]", highlight=False)


@scenario_app.command("run")
def scenario_run(
    name: Annotated[str, typer.Argument(help="uc1 ... uc9, a scenario file, or 'all'.")],
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
    report_dir: Annotated[
        Path | None,
        typer.Option(
            "--report", help="Write trace.jsonl, sequence.svg, outage.svg, result.json here."
        ),
    ] = None,
) -> None:
    """Run a scenario: its deployment, its fault, the probe; print outage, lost updates, the
    message sequence, whether it matches the expected one, and the verdict."""
    from nfvha.lab import scenario as sc

    wanted = sc.names() if name == "all" else [name]
    try:
        loaded = {n: sc.load(n) for n in wanted}
    except cfg.ConfigError as exc:
        raise fail(str(exc), code=2) from None
    outcomes = []
    for n, scenario in loaded.items():
        if not as_json and len(wanted) > 1:
            err.print(f"running {n} ...", highlight=False)
        outcome = asyncio.run(sc.run(Path(n).stem, scenario, sc.directory()))
        outcomes.append(outcome)
        if report_dir is not None:
            where = report_dir / outcome.name if len(wanted) > 1 else report_dir
            sc.write_report(outcome, where)
        if not as_json and len(wanted) == 1:
            _print_scenario(outcome)
    if as_json:
        results = [o.to_json() for o in outcomes]
        print(json.dumps(results if len(wanted) > 1 else results[0]))
    elif len(wanted) > 1:
        _print_scenario_table(outcomes)
    if not all(o.verdict()["pass"] for o in outcomes):
        raise typer.Exit(1)


def _print_scenario(outcome: Any) -> None:
    exp, v = outcome.experiment, outcome.verdict()
    first = exp.faults[0]
    console.print(
        f"[bold]{outcome.scenario.title}[/bold]  ({outcome.scenario.seed})", highlight=False
    )
    console.print(
        "bindings: " + ", ".join(f"${k}={val}" for k, val in outcome.bindings.items()),
        highlight=False,
    )
    rows = report.timeline(exp.records, first.fault_ns, (first.last_good_ns, first.first_good_ns))
    print_timeline([r for r in rows if r["ms"] >= 0 or r["phase"] == "consumer"])
    console.print("\n[bold]Expected sequence[/bold]")
    for i, chain in enumerate(outcome.chains, 1):
        mark = "[green]matches[/green]" if chain["ok"] else "[red]DIFFERS[/red]"
        console.print(f" chain {i}: {mark}", highlight=False)
        for step in chain["steps"]:
            at = f"{step['ms']:+9.3f} ms" if step["ms"] is not None else "  missing  "
            console.print(f"   {at}  {step['step']}", highlight=False)
    if outcome.forbidden_seen:
        seen = ", ".join(outcome.forbidden_seen)
        console.print(f" [red]should not happen, but did:[/red] {seen}", highlight=False)
    if outcome.scenario.escalates_on is not None:
        console.print(
            f" escalation expected on failure {outcome.scenario.escalates_on}, "
            f"came on failure {outcome.escalated_on}",
            highlight=False,
        )
    _print_verdict(v)


def _print_verdict(v: dict[str, Any]) -> None:
    sub = "met" if v["sub_second"] else "MISSED"
    if not v["sub_second_applies"]:
        sub = "n/a (no redundancy)"
    mark = "[green]PASS[/green]" if v["pass"] else "[red]FAIL[/red]"
    console.print(
        f"\noutage {v['outage_ms']:.1f} ms; lost acknowledged {v['lost_acknowledged']}; "
        f"two actives {'YES' if v['two_actives_seen'] else 'no'}; sequence "
        f"{'matches' if v['sequence_matches'] else 'DIFFERS'}; sub-second {sub}; band {v['sal']}"
        f"\nverdict: {mark}",
        highlight=False,
    )


def _print_scenario_table(outcomes: list[Any]) -> None:
    table = Table(
        "scenario", "fault", "outage ms", "lost", "sequence", "sub-second", "band", "verdict"
    )
    for o in outcomes:
        v = o.verdict()
        sub = ("met" if v["sub_second"] else "missed") if v["sub_second_applies"] else "n/a"
        table.add_row(
            o.name,
            o.scenario.fault.kind,
            f"{v['outage_ms']:.1f}",
            str(v["lost_acknowledged"]),
            "matches" if v["sequence_matches"] else "DIFFERS",
            sub,
            v["sal"],
            "PASS" if v["pass"] else "FAIL",
        )
    console.print(table)


# --- simulation --------------------------------------------------------------------------------

sim_app = typer.Typer(
    help="Deterministic simulation of the same managers: fault schedules, invariants, fuzzing.",
    no_args_is_help=True,
)
app.add_typer(sim_app, name="sim")

ConfigArg = Annotated[
    Path, typer.Argument(help="Deployment file (YAML), or a scenario name like uc2.")
]


def load_deployment(config: Path) -> cfg.Deployment:
    """A deployment file, a scenario file, or a scenario's name."""
    from nfvha.lab import scenario as sc

    if config.suffix in (".yaml", ".yml") and config.exists():
        text = config.read_text(errors="replace")
        if "\ndeployment:" not in "\n" + text:
            return load_config(config)[0]
    try:
        return sc.load(str(config)).deployment
    except cfg.ConfigError as exc:
        raise fail(str(exc), code=2) from None


LatenciesOpt = Annotated[
    Path | None,
    typer.Option(help="YAML mapping of latency names to seconds (fork, spawn, exit_seen, ...)."),
]
LatenciesFromOpt = Annotated[
    Path | None,
    typer.Option(help="Take the latencies from a recorded trace (nfvha run --trace, a report)."),
]


def sim_latencies(latencies: Path | None, latencies_from: Path | None) -> Any:
    """The simulator's latencies: measured defaults, a file, or the medians of a real trace."""
    from nfvha.runtime.trace import load
    from nfvha.sim import latency
    from nfvha.sim.world import Latencies

    try:
        if latencies is not None:
            return latency.load(latencies)
        if latencies_from is not None:
            found, counts = latency.from_trace(load(latencies_from))
            seen = ", ".join(f"{k} ({n})" for k, n in counts.items() if n)
            err.print(f"latencies from {latencies_from}: {seen or 'none seen, defaults kept'}")
            return found
    except (latency.LatencyError, OSError, ValueError) as exc:
        raise fail(str(exc), code=2) from None
    return Latencies()


def _print_outcome(outcome: Any, as_json: bool) -> None:
    v = outcome.violation
    if as_json:
        print(
            json.dumps(
                {
                    "seed": outcome.seed,
                    "faults": [f.to_dict() for f in outcome.faults],
                    "ok": v is None,
                    "violation": None
                    if v is None
                    else {"invariant": v.name, "at_s": v.at, "detail": v.detail},
                    "events": outcome.sim.events,
                    "virtual_s": outcome.sim.now,
                }
            )
        )
        return
    console.print(
        f"seed {outcome.seed}: {len(outcome.faults)} faults, {outcome.sim.events} events, "
        f"{outcome.sim.now:.1f} s simulated",
        highlight=False,
    )
    if v is None:
        console.print("[green]all invariants held[/green]")
        return
    console.print(
        f"[red]invariant {v.name} violated[/red] at t={v.at:.6f} s: {v.detail}", highlight=False
    )
    console.print("schedule that fails (YAML, for --faults):", highlight=False)
    print(yaml.safe_dump([f.to_dict() for f in outcome.faults], sort_keys=False), end="")


@sim_app.command("run")
def sim_run(
    config: ConfigArg,
    faults: Annotated[
        str,
        typer.Option(help="'random', or a YAML file: a list of {at, kind, target[, duration]}."),
    ] = "random",
    seed: Annotated[int, typer.Option(help="Seed of the random schedule.")] = 1,
    duration: Annotated[float, typer.Option(help="Seconds of faults (random schedules).")] = 60.0,
    mean_gap: Annotated[float, typer.Option(help="Mean seconds between random faults.")] = 2.0,
    trace: Annotated[Path | None, typer.Option(help="Write the trace here (JSON lines).")] = None,
    latencies: LatenciesOpt = None,
    latencies_from: LatenciesFromOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Simulate a deployment under a fault schedule; every invariant checked at every step.
    The same (deployment, schedule, seed) gives the same trace, byte for byte."""
    from nfvha.sim import faults as fs
    from nfvha.sim import runner

    deployment = load_deployment(config)
    if faults == "random":
        schedule = runner.random_schedule(deployment, seed, duration, mean_gap)
    else:
        try:
            schedule = fs.load(Path(faults), runner.entities(deployment))
        except fs.ScheduleError as exc:
            raise fail(str(exc), code=2) from None
    lat = sim_latencies(latencies, latencies_from)
    outcome = runner.simulate(deployment, seed, schedule, latencies=lat)
    if outcome.violation is not None:
        outcome = runner.shrink(deployment, outcome, latencies=lat)
    if trace is not None:
        trace.write_text(outcome.sim.trace_text())
    _print_outcome(outcome, as_json)
    if outcome.violation is not None:
        raise typer.Exit(1)


@sim_app.command("fuzz")
def sim_fuzz(
    config: ConfigArg,
    runs: Annotated[int, typer.Option(min=1, help="How many seeds to try.")] = 100,
    first_seed: Annotated[int, typer.Option(help="The first seed.")] = 1,
    duration: Annotated[float, typer.Option(help="Seconds of faults per run.")] = 30.0,
    mean_gap: Annotated[float, typer.Option(help="Mean seconds between faults.")] = 1.0,
    latencies: LatenciesOpt = None,
    latencies_from: LatenciesFromOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Random fault schedules, one per seed; the first failing run is shrunk to the shortest
    schedule that still fails, and printed with its seed."""
    from nfvha.sim import runner

    deployment = load_deployment(config)
    lat = sim_latencies(latencies, latencies_from)
    done, failed = runner.fuzz(
        deployment,
        runs,
        first_seed=first_seed,
        duration=duration,
        mean_gap=mean_gap,
        latencies=lat,
    )
    if failed is None:
        if as_json:
            print(json.dumps({"runs": done, "ok": True}))
        else:
            console.print(f"[green]{done} runs, all invariants held[/green]", highlight=False)
        return
    _print_outcome(runner.shrink(deployment, failed, latencies=lat), as_json)
    raise typer.Exit(1)


@app.command()
def predict(
    config: Annotated[
        Path, typer.Argument(help="Deployment file (YAML) with a 'reliability' section.")
    ],
    runs: Annotated[
        int | None,
        typer.Option(
            min=2, help="Independent runs (seeds SEED..); default: as many as --precision needs."
        ),
    ] = None,
    precision: Annotated[
        float,
        typer.Option(
            min=0.001, help="Without --runs: run until the 95% CI on unavailability is ±this."
        ),
    ] = 0.05,
    years: Annotated[float, typer.Option(min=0.001, help="Simulated years per run.")] = 1.0,
    seed: Annotated[int, typer.Option(help="Seed of the first run.")] = 1,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Predict each service's availability from the MTBF and MTTR of VNFCs, VMs and hosts:
    Monte Carlo over simulated years of the same managers, with 95 % confidence intervals,
    cross-checked against the closed-form Markov result where it applies (2n or none, only
    VNFCs failing). See docs/predict.md."""
    import time

    from nfvha.sim import predict as pr

    deployment = load_deployment(config)
    started = time.monotonic()
    try:
        result = pr.predict(deployment, runs=runs, years=years, seed=seed, precision=precision)
    except pr.PredictError as exc:
        raise fail(f"{config}: {exc}", code=2) from None
    if as_json:
        print(json.dumps(result.to_json()))
        return
    rel = result.reliability
    given = []
    for kind in pr.KINDS:
        r = getattr(rel, kind)
        if r is not None:
            hangs = getattr(r, "hang_fraction", 0.0)
            repair = getattr(result.latencies, pr.LATENCY_OF[kind])
            given.append(
                f"{kind} MTBF {r.mtbf_h:g} h, repair {repair:g} s"
                + (f" ({hangs:.0%} hangs)" if hangs else "")
            )
    console.print(
        f"[bold]{result.deployment}[/bold]: {result.runs} runs x {result.years:g} "
        f"year{'' if result.years == 1 else 's'}, "
        f"seeds {result.seed}..{result.seed + result.runs - 1}: {result.faults} failures, "
        f"{result.events} events, {time.monotonic() - started:.1f} s"
        + (f" (runs until ±{result.precision:.0%} on unavailability)" if result.precision else "")
        + "\n"
        f"failures: {'; '.join(given)}; other kinds do not fail",
        highlight=False,
        soft_wrap=True,
    )
    for s in result.services:
        a, n, d, o = s.availability, s.nines, s.downtime_min, s.outages_per_year
        digits = min(12, max(4, int(pr.nines(a.mean)) + 4)) if a.mean < 1 else 4
        console.print(
            f"\nservice [bold]{s.service}[/bold] (VNF {s.vnf}, model {s.model})\n"
            f"  availability  {a.mean:.{digits}f}   95% CI [{a.low:.{digits}f}, "
            f"{a.high:.{digits}f}]"
            + (
                f" (unavailability ±{s.unavailability_rel_ci:.1%})"
                if s.unavailability_rel_ci is not None
                else ""
            )
            + "\n"
            f"  nines         {n.mean:.2f}   [{n.low:.2f}, {n.high:.2f}]\n"
            f"  downtime      {d.mean:.1f} min/year   [{d.low:.1f}, {d.high:.1f}]\n"
            f"  outages       {o.mean:.1f} /year   [{o.low:.1f}, {o.high:.1f}]",
            highlight=False,
            soft_wrap=True,
        )
        if s.closed is not None:
            c = s.closed.availability
            where = (
                "[green]inside[/green]" if s.closed_inside else "[yellow]OUTSIDE[/yellow]"
            ) + " the 95% CI"
            console.print(
                f"  closed form   {c:.{digits}f}   ({pr.nines(c):.2f} nines, "
                f"{pr.downtime_min_per_year(c):.1f} min/year; Markov, model {s.closed.model}): "
                f"{where}",
                highlight=False,
                soft_wrap=True,
            )
        table = Table("outages by kind", "count", "median ms", "p95 ms", "max ms")
        for kind, k in s.by_kind.items():
            table.add_row(
                kind, str(k.count), f"{k.median_ms:,.1f}", f"{k.p95_ms:,.1f}", f"{k.max_ms:,.1f}"
            )
        if s.by_kind:
            console.print(table)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)
