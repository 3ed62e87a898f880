#!/usr/bin/env python3
"""Read the wrk outputs bench/run.sh saved and print the Markdown result table.

    summarize.py RESULTS_DIR

RESULTS_DIR holds `<case>.r<round>.txt` (wrk --latency output) and `<case>.skipped`
(one line: why the case did not run). Medians are taken over rounds, separately for
requests/s and for p99 latency. Ratios and targets are those of issues 2 and 3.
"""
import os
import re
import statistics
import sys

CASES = [
    ("a", "nginx direct (return 200, 1 worker)"),
    ("b", "nginx keep-alive reverse proxy (1 worker)"),
    ("c", "HAProxy 2.6 jwt_verify HS256 + exp + 2 set-header (1 thread)"),
    ("d", "authgate, public route"),
    ("e", "authgate, required route, stateless HS256"),
    ("f", "authgate, required route, stateful, memory store"),
    ("g", "authgate, required route, stateful, Redis store"),
    ("h", "authgate, required route, stateless, RS256 token of an issuer (local JWKS)"),
    ("i", "authgate, required route, stateless HS256, token in the [browser] access cookie"),
    ("j", "authgate, built-in login page (GET /auth/login)"),
    ("k", "authgate, GET /auth/captcha (PNG drawn + kept in the memory store)"),
    ("l", "authgate, required route, stateless HS256, access log off (`[log] access = false`)"),
]
# case -> [(reference case, minimum req/s ratio, p99 must be <= reference's), ...]
TARGETS = {
    "d": [("b", 1.0, False)],
    "e": [("c", 1.2, True), ("l", 0.95, False)],
    "f": [("e", 0.95, False)],
    "g": [("f", 0.95, False)],
    "h": [("e", 0.95, False), ("c", 1.2, False)],
    "i": [("e", 0.95, False)],
}
# Cases reported as a cost per request, with no target (issue 11: login page, captcha).
COST = ("j", "k")
UNIT = {"us": 1e-3, "ms": 1.0, "s": 1e3}


def parse(path):
    text = open(path, encoding="utf-8", errors="replace").read()
    rps = re.search(r"^Requests/sec:\s+([0-9.]+)", text, re.M)
    p99 = re.search(r"^\s+99(?:\.000)?%\s+([0-9.]+)(us|ms|s)\s*$", text, re.M)
    non2xx = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if not rps or not p99:
        return None
    errors = int(non2xx.group(1)) if non2xx else 0
    if sock:
        errors += sum(int(x) for x in sock.groups())
    return float(rps.group(1)), float(p99.group(1)) * UNIT[p99.group(2)], errors


def cpu_per_request(path):
    """µs of the server's CPU time per request in one run (from `<run>.cpu` next to the wrk
    output: ticks used, ticks per second), or None."""
    try:
        ticks, hz = open(path[: -len(".txt")] + ".cpu").read().split()
        text = open(path, encoding="utf-8", errors="replace").read()
        n = int(re.search(r"^\s*(\d+) requests in", text, re.M).group(1))
    except (OSError, ValueError, AttributeError):
        return None
    return int(ticks) / int(hz) * 1e6 / n if n and int(ticks) > 0 else None


def median_cpu(r):
    """Median µs of CPU per request over a case's rounds, or None if not measured."""
    xs = [x for x in r.get("cpu", []) if x is not None]
    return statistics.median(xs) if xs else None


def judge(r, res, ref, minimum, p99_rule):
    """(ratio, target, met) of one case's result `r` against one target."""
    shown = f"{minimum:.2f}".rstrip("0")
    shown = shown + "0" if shown.endswith(".") else shown
    target = f"≥ {shown}× ({ref})" + (f", p99 ≤ ({ref})" if p99_rule else "")
    if ref not in res:
        return "—", target, f"n/a: ({ref}) not measured"
    q = r["rps"] / res[ref]["rps"]
    ratio = f"{q:.2f}× ({ref})"
    if len(r["rounds"]) == len(res[ref]["rounds"]) > 1:
        # Rounds are round-robin, so round n of both ran minutes apart at most: the median of
        # the per-round ratios is less exposed to the machine's drift than the ratio of medians.
        paired = statistics.median(a / b for a, b in zip(r["rounds"], res[ref]["rounds"]))
        ratio += f" (paired {paired:.2f}×)"
    mine, theirs = median_cpu(r), median_cpu(res[ref])
    if mine and theirs:
        # The same comparison by CPU time per request (its inverse: higher is better).
        ratio += f", by CPU/request {theirs / mine:.2f}×"
    ok = q >= minimum
    detail = []
    if not ok:
        detail.append(f"req/s short by {(minimum - q) / minimum * 100:.0f}%")
    if p99_rule:
        pr = r["p99"] / res[ref]["p99"]
        ratio += f", p99 {pr:.2f}×"
        if r["p99"] > res[ref]["p99"]:
            ok = False
            detail.append(f"p99 {(pr - 1) * 100:.0f}% worse")
    return ratio, target, "yes" if ok else "NO: " + "; ".join(detail)


def main():
    d = sys.argv[1]
    files = os.listdir(d)
    res, skipped = {}, {}
    for key, _ in CASES:
        runs = []
        for f in sorted(files, key=lambda f: [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", f)]):
            m = re.fullmatch(re.escape(key) + r"\.r(\d+)\.txt", f)
            if m:
                r = parse(os.path.join(d, f))
                if r:
                    runs.append(r + (cpu_per_request(os.path.join(d, f)),))
        bg = []
        for f in files:
            if re.fullmatch(re.escape(key) + r"\.r\d+\.bg", f):
                bg += [int(x) for x in re.findall(r"=(\d+)%", open(os.path.join(d, f)).read())]
        if runs:
            res[key] = {
                "bg": max(bg) if bg else None,
                "rps": statistics.median(r[0] for r in runs),
                "p99": statistics.median(r[1] for r in runs),
                "rounds": [r[0] for r in runs],
                "errors": sum(r[2] for r in runs),
                "cpu": [r[3] for r in runs],
            }
        sk = os.path.join(d, key + ".skipped")
        if os.path.exists(sk):
            skipped[key] = open(sk).read().strip()

    print("| case | what | req/s (median) | p99 ms (median) | req/s per round | CPU µs/req (median) | errors | other load | ratio | target | met |")
    print("|---|---|---:|---:|---|---:|---:|---:|---:|---|---|")
    for key, what in CASES:
        if key not in res:
            reason = skipped.get(key, "not run")
            print(f"| ({key}) | {what} | — | — | — | — | — | — | — | SKIPPED: {reason} | — |")
            continue
        r = res[key]
        ratio = target = met = "—"
        if key in TARGETS:
            ratios, targets, mets = [], [], []
            for ref, minimum, p99_rule in TARGETS[key]:
                q_ratio, q_target, q_met = judge(r, res, ref, minimum, p99_rule)
                ratios.append(q_ratio)
                targets.append(q_target)
                mets.append(q_met)
            ratio, target, met = "; ".join(ratios), "; ".join(targets), "; ".join(mets)
        elif key in ("b", "c") and "a" in res:
            ratio = f"{r['rps'] / res['a']['rps']:.2f}× (a)"
        elif key in COST:
            # The gateway is pinned to CPU 0 and saturated: its CPU time per answer.
            ratio = f"≈ {1e6 / r['rps']:,.0f} µs CPU 0 per request"
        rounds = ", ".join(f"{x:,.0f}" for x in r["rounds"])
        errs = str(r["errors"]) if r["errors"] == 0 else f"**{r['errors']}**"
        load = "?" if r["bg"] is None else (f"{r['bg']}%" if r["bg"] <= 10 else f"**{r['bg']}%**")
        cpu = median_cpu(r)
        cpu = "—" if cpu is None else f"{cpu:.1f}"
        print(f"| ({key}) | {what} | {r['rps']:,.0f} | {r['p99']:.2f} | {rounds} | {cpu} | {errs} | {load} | {ratio} | {target} | {met} |")
    print("\n`other load`: the highest CPU 0/1 use by other work in the second before a run of that case"
          " (servers idle); above 10% the run competed with something else. `CPU µs/req`: user + system"
          " time of the server process (all threads) during a run over the requests wrk counted.")
    if any(r["errors"] for r in res.values()):
        print("\nWARNING: some runs had non-2xx responses or socket errors (errors column); "
              "their numbers do not measure the intended path.")


if __name__ == "__main__":
    main()
