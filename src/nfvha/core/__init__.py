"""Pure decision logic: event + now -> commands + one sentence of why. No I/O, no clock."""
