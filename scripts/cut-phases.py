#!/usr/bin/env python3
"""Where a background-snapshot cut's pause went, from QEMU's own trace.

Run a bench or the demo with the agent's QEMU trace on and the lab kept, e.g.

  VNSNAP_KEEP_LAB=1 \
  VNSNAP_QEMU_TRACE=handle_qmp_command,monitor_qmp_respond,savevm_state_header,ram_write_tracking_ramblock_start,monitor_protocol_event_emit \
  target/release/vnsnap-testbed bench snapshot --reps 3

then pass the domains' trace logs:

  scripts/cut-phases.py /tmp/vsl-*/host*/state/domains/*/qemu-trace.log

For every `stop` it prints the ms from the request to: the STOP event (vCPUs out of guest
code), the reply to `migrate` (the agent's switch and disk steps in between), the
migration thread's first event (its set-up, `ram_write_tracking_prepare` among it), write
protection in place (device state saved), and RESUME.
"""
import sys


def stamp(line):
    return float(line.split("@", 1)[1].split(":", 1)[0])


def phases(lines):
    for i, line in enumerate(lines):
        if '"execute": "stop"' not in line:
            continue
        t0, got, migrate = stamp(line), {}, None
        for m in lines[i:i + 200]:
            if '"event": "STOP"' in m and "stop" not in got:
                got["stop"] = stamp(m)
            elif '"execute": "migrate"' in m:
                migrate = stamp(m)
            elif migrate and 'resp: {"return"' in m and "migrate reply" not in got and stamp(m) > migrate:
                got["migrate reply"] = stamp(m)
            elif "savevm_state_header" in m:
                got["thread start"] = stamp(m)
            elif "ram_write_tracking_ramblock_start" in m:
                got["write-protected"] = stamp(m)
            elif '"event": "RESUME"' in m:
                got["resume"] = stamp(m)
                break
        prev, parts = t0, []
        for k in ["stop", "migrate reply", "thread start", "write-protected", "resume"]:
            if k in got:
                parts.append(f"{k} +{(got[k] - prev) * 1000:.1f}")
                prev = got[k]
        yield (prev - t0) * 1000, parts


def main(paths):
    if not paths:
        sys.exit(__doc__)
    for p in paths:
        with open(p, errors="replace") as f:
            lines = f.read().splitlines()
        name = p.rstrip("/").split("/")[-2]
        for total, parts in phases(lines):
            print(f"{name}: {total:.1f} ms: {', '.join(parts)}")


if __name__ == "__main__":
    main(sys.argv[1:])
