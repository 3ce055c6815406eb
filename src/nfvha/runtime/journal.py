"""Escalations and failovers as one structured line each on stderr, for journald and whatever
reads a service's log: ``nfvha event=failover vnf=counter from=counter-a to=counter-b epoch=2``.

key=value (logfmt): greppable by a person, parsed by Loki, Vector or journalctl's output
filters alike; a value with a space or a quote is JSON-quoted.
"""

from __future__ import annotations

import json
import sys

from nfvha.runtime import outcomes as o


def line(outcome: o.Outcome) -> str | None:
    """The stderr line for an outcome, or None for those that have none."""
    if isinstance(outcome, o.Failover):
        fields = {"vnf": outcome.vnf, "from": outcome.source, "to": outcome.target}
        return _format("failover", {**fields, "epoch": outcome.epoch})
    if isinstance(outcome, o.Escalation):
        fields = {"vnf": outcome.vnf, "vnfc": outcome.vnfc, "failures": outcome.failures}
        return _format("escalation", {**fields, "reason": outcome.reason})
    return None


def emit(outcome: o.Outcome) -> None:
    if (text := line(outcome)) is not None:
        print(text, file=sys.stderr, flush=True)  # flushed: journald sees it as it happens


def _format(event: str, fields: dict[str, object]) -> str:
    pairs = [f"event={event}", *(f"{k}={_value(v)}" for k, v in fields.items())]
    return "nfvha " + " ".join(pairs)


def _value(value: object) -> str:
    text = str(value)
    if not text or any(c in text for c in ' "=\\') or not text.isprintable():
        return json.dumps(text)
    return text
