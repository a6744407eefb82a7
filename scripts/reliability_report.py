#!/usr/bin/env python3
"""Write the reliability report (docs/reliability.md, through make reliability-doc) from the
figures the test run recorded.

Every test of issue 5's scenarios writes its figures as JSON under cargo's target tmp dir
(tests/support: record_figures). This script only arranges them: no figure is typed here.
It fails when a figure is missing, so a partial run cannot leave a page that looks whole.

usage: reliability_report.py FIGURES_DIR OUTPUT.md
"""
import datetime
import json
import os
import platform
import subprocess
import sys

READINESS = ["readiness-" + n for n in [
    "healthy", "image", "secret", "unhealthy", "placement", "circuit-breaker", "first-fails",
    "across-invocations", "invoke-refused", "update-rolled-back",
]]

EXPECTED = [
    "transient-create", "transient-update", "transient-delete", "transient-heal",
    "persistent-create", "persistent-update", "persistent-delete",
    "replayed-in-sequence", "replayed-concurrently",
    "heal-during-delete", "heal-during-update", "heals-at-once",
    "response-put", "response-put-never", "panic",
    "hostile-generated", "hostile-invalid-requests", "hostile-hand-written", "response-urls",
    "secrets",
    "tamper-tags", "tamper-service", "tamper-elsewhere", "tamper-owner", "tamper-direct",
    "tamper-copied-tags-at-a-tombstone",
    "race-cut-off-update", "race-replay-after-delete", "race-two-stacks",
    "race-late-create-refused", "race-late-create-removed", "race-heal-cut-off-before-delete",
    "upgrade-harness-faults", "upgrade-key-scan",
] + READINESS




def case_table(f, names, columns):
    """A Markdown table of the rows the tests `names` recorded, one column per key."""
    out = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for name in names:
        out += ["| " + " | ".join(row[c] for c in columns) + " |" for row in f[name]]
    return out


def main():
    figures_dir, out = sys.argv[1], sys.argv[2]
    missing = [n for n in EXPECTED if not os.path.exists(os.path.join(figures_dir, n + ".json"))]
    if missing:
        sys.exit(f"reliability_report: no figures from {', '.join(missing)} in {figures_dir}: run the whole test suite (make test)")
    f = {n: json.load(open(os.path.join(figures_dir, n + ".json"))) for n in EXPECTED}

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    changed = [l for l in subprocess.run(["git", "status", "--porcelain"], capture_output=True, text=True).stdout.splitlines()
               if not l.endswith("docs/reliability.md")]
    if changed:
        commit += " plus uncommitted changes"
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), platform.machine())
    lines = [
        "# Reliability under faults: figures",
        "",
        f"Written by `make test` (scripts/reliability_report.py, from what the tests recorded; "
        f"copied here by `make reliability-doc`) on "
        f"{datetime.date.today()}, at commit {commit}, on {os.cpu_count()} × {cpu}. "
        "AWS is moto behind the fault-injecting proxy of tests/support/proxy.rs. Do not edit by hand.",
        "",
        "## Transient faults on every operation (tests/reliability.rs)",
        "",
        "Each operation the flow calls gets the fault on its first call; the run must still converge: "
        "CloudFormation gets one SUCCESS (a heal reports Repaired), one ACTIVE service, one new revision, one security group.",
        "",
        "| flow | operations | fault | runs | faults injected | converged |",
        "|---|---|---|---|---|---|",
    ]
    injected_total = 0
    for flow in ["create", "update", "delete", "heal"]:
        t = f["transient-" + flow]
        for kind, k in t["per kind"].items():
            injected_total += k["faults injected"]
            lines.append(f"| {t['flow']} | {len(t['operations'])} | {kind} | {k['runs']} | {k['faults injected']} | {k['converged']} |")
    lines += ["", "| fault, all flows | faults injected | survived (converged) |", "|---|---|---|"]
    for kind in f["transient-create"]["per kind"]:
        runs = [f["transient-" + fl]["per kind"][kind] for fl in ["create", "update", "delete", "heal"]]
        lines.append(f"| {kind} | {sum(r['faults injected'] for r in runs)} | {sum(r['converged'] for r in runs)} |")
    lines += ["", "Operations covered: " + "; ".join(
        f"{f['transient-' + fl]['flow']}: {', '.join(f['transient-' + fl]['operations'])}" for fl in ["create", "update", "delete", "heal"]) + ".", ""]

    lines += [
        "## Persistent faults (tests/reliability.rs)",
        "",
        "Each operation fails on every call (500, throttling or reset, in turn) with a 30 s invocation deadline: "
        "CloudFormation must get FAILED naming the operation before the deadline, and the Delete that follows must leave nothing.",
        "",
        "| flow | operations | faults injected | failed in time, named, cleaned up |",
        "|---|---|---|---|",
    ]
    for flow in ["create", "update", "delete"]:
        p = f["persistent-" + flow]
        injected_total += p["faults injected"]
        lines.append(f"| {p['flow']} | {p['operations']} | {p['faults injected']} | {p['failed in time, naming the operation, and cleaned up by a Delete']} |")

    put, never, panic = f["response-put"], f["response-put-never"], f["panic"]
    injected_total += put["PUT faults injected (5xx, reset)"]
    lines += [
        "",
        "## Replayed and concurrent requests",
        "",
        f"- The same CloudFormation request delivered twice in sequence: {f['replayed-in-sequence']['requests delivered twice']} request types (Create, Update, Delete), each answered twice with the same PhysicalResourceId and nothing doubled.",
        f"- Delivered twice at the same time: {f['replayed-concurrently']['requests delivered twice at once']} request types; one run wrote, the other waited for the delegate's lease and answered the same (SUCCESS, one PhysicalResourceId, one service, one new revision).",
        f"- A heal running during a stack Delete, held at each of {f['heal-during-delete']['steps of a Delete a heal ran in']} steps: no heal write, nothing brought back.",
        f"- A heal running during a stack Update, held at each of {f['heal-during-update']['steps of an Update a heal ran in']} writes: the end state is the Update's.",
        f"- {f['heals-at-once']['heals at once']} heals at once, both finding the revision deregistered: repaired {f['heals-at-once']['repaired']}, stood down {f['heals-at-once']['stood down']}, copies registered {f['heals-at-once']['copies registered']}, kept {f['heals-at-once']['copies kept']}.",
        "",
        "## Tampering (tests/record.rs, tests/heal.rs, tests/engine.rs)",
        "",
        "What others can write in the account, tried against a delegate next to a genuine drift that the same heal still repairs. "
        "The record heal trusts is the DynamoDB item only the function writes.",
        "",
    ]
    lines += case_table(f, ["tamper-tags", "tamper-service", "tamper-elsewhere", "tamper-owner", "tamper-direct",
                            "tamper-copied-tags-at-a-tombstone"],
                        ["case", "outcome"])
    lines += [
        "",
        "## Races and crashes (tests/record.rs, tests/reliability.rs, tests/heal.rs)",
        "",
    ]
    lines += case_table(f, ["race-cut-off-update", "race-replay-after-delete", "race-two-stacks",
                            "race-late-create-refused", "race-late-create-removed",
                            "race-heal-cut-off-before-delete"],
                        ["case", "interleaving", "outcome"])
    lines += [
        "",
        "## Waiting for the delegate (tests/readiness.rs)",
        "",
        "Stack requests through the built binary as Lambda runs it, against the ECS simulator of tests/support/ecs_sim.rs "
        "(moto starts no tasks). Each case got exactly one answer; FAILED ones name what ECS said and the one thing to check.",
        "",
    ]
    lines += case_table(f, READINESS, ["scenario", "answer", "invocations", "said"])
    harness_faults = f["upgrade-harness-faults"]
    scan = f["upgrade-key-scan"]
    lines += [
        "",
        "## Harness's API faults during an upgrade run (tests/upgrade.rs)",
        "",
        f"The fake Harness API (under `/gratis`) played {len(harness_faults)} faults while a newer version was "
        "published; each run changed nothing and reported the delegate Skipped with the reason, and the run after "
        "the faults upgraded it.",
        "",
    ]
    lines += case_table(f, ["upgrade-harness-faults"], ["fault", "outcome"])
    lines += [
        "",
        f"The Harness API key, in the runs above at TRACE: {scan['log lines scanned']} log lines, "
        f"{scan['invocation results scanned']} invocation results and {scan['CloudFormation bodies scanned']} "
        f"CloudFormation bodies scanned; found: **{scan['leaks']}**.",
    ]
    lines += [
        "",
        "## The CloudFormation response and panics",
        "",
        f"- Response PUT answered 500, then reset: {put['attempts']} attempts, delivered {put['delivered']} time.",
        f"- Response PUT refused every time: {never['attempts, all refused']} attempts, then an invocation error without the URL.",
        f"- A panic injected in the middle of a Create (test hook): answered FAILED {panic['answered FAILED']} time; left after the following Delete: {panic['left after the Delete']}.",
        "",
        "## Hostile input (tests/hostile.rs, tests/runtime_api.rs)",
        "",
    ]
    g, inv, hw, urls = f["hostile-generated"], f["hostile-invalid-requests"], f["hostile-hand-written"], f["response-urls"]
    lines += [
        f"- Generated events (seeded): {g['generated inputs']}, of which {g['CloudFormation-shaped']} CloudFormation-shaped; panics: {g['panics']}.",
        f"- Generated invalid stack requests through the handler: {inv['invalid requests']}, each answered FAILED once; AWS calls: {inv['AWS calls']}.",
        f"- Hand-written requests (wrong types for every property, control and bidi characters, 1 MB values, deep nesting): {hw['hand-written requests']}, each FAILED naming the property; non-requests refused: {hw['non-requests refused']}; AWS calls: {hw['AWS calls']}.",
        f"- ResponseURLs that are not https to S3: {urls['ResponseURLs refused without a request']} refused, no request made.",
        "",
        "## Secrets",
        "",
    ]
    s = f["secrets"]
    lines += [
        f"The built binary at RUST_LOG=trace ran {s['requests at TRACE']} requests (Create, Plan, Update, a failing Update, Heal, Reconcile, Delete; "
        "with a plain DelegateToken and with a secret ARN). Scanned: "
        f"{s['log lines scanned']} log lines, {s['invocation results scanned']} invocation results, {s['CloudFormation bodies scanned']} CloudFormation bodies. "
        f"Token or presigned-URL query found: **{s['leaks']}**.",
        "",
        f"**Total faults injected into AWS calls and the response PUT: {injected_total}.**",
        "",
        "## What these figures do not show",
        "",
        "- AWS itself: moto answers in place of AWS, so AWS's own consistency delays (a register not yet listed, the tagging index behind) are not exercised.",
        "- AWS's refusal of a second CreateService (\"not idempotent\") is played by the proxy; moto accepts it silently.",
        "- ECS's tasks, their health, deployments and service events are the simulator's: moto starts no task. The stop reasons and event texts are ECS's documented ones, not captured from an account.",
        "- DynamoDB is moto's: conditional writes and consistent reads behave as documented, but moto never expires items (TTL), so the tombstones' expiry is not exercised.",
        "",
    ]
    with open(out, "w") as fh:
        fh.write("\n".join(lines))


if __name__ == "__main__":
    main()
