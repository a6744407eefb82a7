#!/usr/bin/env bash
# The main job, on the moto emulator: seed what a platform team already has, install a Fargate
# delegate through the function as CloudFormation would, show the service, break it out of band
# and let the scheduled heal repair it, let it follow Harness's latest supported version and
# upgrade it when a stand-in Harness publishes a newer one, then delete it.
set -euo pipefail
cd "$(dirname "$0")/.."

PORT=5000       # the sample events' ResponseURLs point at the emulator's S3 on this port
MOTO_PORT=5001  # moto itself, behind the ECS simulator on $PORT
HARNESS_PORT=5002  # a stand-in for Harness's API (scripts/fake_harness.py)
# The binary `make demo` builds; tests/readme.rs passes the one cargo built for the tests.
BIN="${DEMO_BIN:-${CARGO_TARGET_DIR:-target}/debug/harness-ecs-delegate-bootstrap}"
SIMULATOR="${DEMO_SIMULATOR:-${CARGO_TARGET_DIR:-target}/debug/examples/ecs_simulator}"
PY=.venv/bin/python
export AWS_ENDPOINT_URL="http://127.0.0.1:$PORT" AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 \
       AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing \
       RESPONSE_URL_ALLOW_LOOPBACK=true RECORD_TABLE=harness-delegate-records RUST_LOG=warn \
       READY_POLL_SECONDS=1

for p in $PORT $MOTO_PORT $HARNESS_PORT; do
  if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
    echo "port $p is in use: stop whatever listens there (an earlier emulator? make emulator-stop) and run make demo again" >&2
    exit 1
  fi
done
.venv/bin/moto_server -H 127.0.0.1 -p "$MOTO_PORT" >/tmp/harness-demo-moto.log 2>&1 &
MOTO=$!
trap 'kill $MOTO 2>/dev/null || true' EXIT
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$MOTO_PORT") 2>/dev/null && break; sleep 0.2; done
# moto never starts a service's tasks; the simulator does, as ECS would: the demo's delegate
# takes a few looks to become healthy, and a delegate whose image does not exist never starts.
SIM_SCRIPTS="harness-demo/harness-delegate=slow;harness-demo/broken-delegate=pull-error:harness/delegate:no-such-tag" \
  "$SIMULATOR" "127.0.0.1:$PORT" "http://127.0.0.1:$MOTO_PORT" >/tmp/harness-demo-simulator.log 2>&1 &
SIM=$!
trap 'kill $SIM $MOTO 2>/dev/null || true' EXIT
for _ in $(seq 50); do (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break; sleep 0.2; done
echo 25.10.87100 >/tmp/harness-demo-latest
$PY scripts/fake_harness.py "$HARNESS_PORT" /gratis demoAccountId123 sat.demoAccountId123.demo.not-a-real-key \
  /tmp/harness-demo-latest >/tmp/harness-demo-harness.log 2>&1 &
HARNESS=$!
trap 'kill $HARNESS $SIM $MOTO 2>/dev/null || true' EXIT

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

step "1. Seed the emulator: VPC (2 private + 1 public subnet), cluster harness-demo, roles, token secret, record table"
$PY scripts/seed_demo.py "$AWS_ENDPOINT_URL" | tee /tmp/harness-demo-seeded.json

step "2. Plan (dry run, changes nothing): $BIN plan events/plan.json"
$BIN plan events/plan.json | $PY -c 'import json, sys
p = json.load(sys.stdin)
for a in p["Actions"]:
    print("  %s: %s" % (a["Action"], a["Reason"]))
print("  network:", json.dumps(p["Desired"].get("Network")))'

step "3. CloudFormation Create: $BIN invoke events/create.json (it answers once the delegate is ready)"
RUST_LOG=info $BIN invoke events/create.json 2>/tmp/harness-demo-create.log >/dev/null
grep -oE "(waiting for the delegate: [0-9]+/[0-9]+ running(, [0-9]+/[0-9]+ healthy)?|the delegate is ready)" /tmp/harness-demo-create.log | sed 's/^/  /'

step "4. The response CloudFormation received (from the presigned S3 URL)"
show_response() {
  $PY - "$1" <<'PY'
import boto3, json, sys
s3 = boto3.client("s3")
print(json.dumps(json.loads(s3.get_object(Bucket="cfn-responses", Key=sys.argv[1])["Body"].read()), indent=2))
PY
}
show_response create

step "5. The delegate's ECS service and task definition"
show_service() {
  $PY <<'PY'
import boto3
ecs = boto3.client("ecs")
s = ecs.describe_services(cluster="harness-demo", services=["harness-delegate"])["services"][0]
print(f"  service {s['serviceName']}: status={s['status']} launchType={s.get('launchType')} desired={s['desiredCount']}")
print(f"  network: {s.get('networkConfiguration', {}).get('awsvpcConfiguration')}")
td = ecs.describe_task_definition(taskDefinition=s["taskDefinition"])["taskDefinition"]
c = td["containerDefinitions"][0]
print(f"  task definition {td['family']}:{td['revision']}: networkMode={td.get('networkMode')} cpu={td.get('cpu')} memory={td.get('memory')} image={c['image']}")
print(f"  token from: {[x['valueFrom'] for x in c.get('secrets', [])]}")
PY
}
show_service

step "5b. A second delegate whose image does not exist: the Create fails fast, with the reason"
$PY - <<'PY' >/tmp/harness-demo-broken.json
import json
e = json.load(open("events/create.json"))
e["RequestId"] = "7d0e5c9c-0001-4f6e-9d1a-broken000001"
e["ResponseURL"] = e["ResponseURL"].replace("/cfn-responses/create?", "/cfn-responses/create-broken?")
e["LogicalResourceId"] = "BrokenDelegate"
e["ResourceProperties"].update(ServiceName="broken-delegate", Image="harness/delegate:no-such-tag", TaskDefinitionFamily="broken-delegate")
print(json.dumps(e))
PY
$BIN invoke /tmp/harness-demo-broken.json >/dev/null 2>&1 || true
$PY - <<'PY'
import boto3, json
r = json.loads(boto3.client("s3").get_object(Bucket="cfn-responses", Key="create-broken")["Body"].read())
print("  Status:", r["Status"])
print("  Reason:", r["Reason"])
PY
$BIN invoke <($PY - <<'PY'
import json
e = json.load(open("/tmp/harness-demo-broken.json"))
e.update(RequestType="Delete", RequestId="7d0e5c9c-0001-4f6e-9d1a-broken000002", PhysicalResourceId="arn:aws:ecs:us-east-1:123456789012:service/harness-demo/broken-delegate")
print(json.dumps(e))
PY
) >/dev/null
$PY - <<'PY'
import boto3
s = boto3.client("ecs").describe_services(cluster="harness-demo", services=["broken-delegate"])["services"]
print("  CloudFormation's rollback Delete: broken-delegate's service is", s[0]["status"] if s else "gone")
PY

step "6. Create again (Lambda may deliver a request twice): nothing changes"
$BIN plan events/plan.json | $PY -c 'import json,sys; print("  actions:", json.load(sys.stdin)["Actions"])'

step "7. CloudFormation Update (DesiredCount 2, Memory 8192): $BIN invoke events/update.json"
$BIN invoke events/update.json >/dev/null
show_service

step "8. Someone deletes the delegate's service out of band"
$PY <<'PY'
import boto3
ecs = boto3.client("ecs")
ecs.delete_service(cluster="harness-demo", service="harness-delegate", force=True)
s = ecs.describe_services(cluster="harness-demo", services=["harness-delegate"])["services"][0]
print("  service status:", s["status"])
PY

step "9. The scheduled heal (EventBridge, every 5 minutes): $BIN invoke events/heal-schedule.json"
# One structured log line per delegate goes to the log; the result says the same per delegate.
RUST_LOG=info $BIN invoke events/heal-schedule.json 2>/tmp/harness-demo-heal.log | $PY -c 'import json, sys
r = json.load(sys.stdin)
print("  status:", r["Status"])
for d in r["Delegates"]:
    print("  %s: %s" % (d["Delegate"], d["Outcome"]))
    for f in d["Found"]:
        print("    found:", f)
    for a in d["Actions"]:
        print("    did:  ", a["Action"])'
echo "  log line: $(grep -m1 'delegate heal' /tmp/harness-demo-heal.log)"
show_service

step "10. The next heal finds everything as recorded and writes nothing"
$BIN invoke events/heal-schedule.json | $PY -c 'import json, sys
for d in json.load(sys.stdin)["Delegates"]:
    print("  %s: %s (%s)" % (d["Delegate"], d["Outcome"], "; ".join(d["Found"])))'

step "10b. Keep it current: an Update gives the function a Harness API key (and drops the pinned Image)"
# A stack Update with HarnessApiKeySecretArn and no Image: the image follows Harness's latest
# supported version, asked of the stand-in Harness under /gratis.
$PY - <<'PY' >/tmp/harness-demo-follow.json
import json
e = json.load(open("events/update.json"))
key = json.load(open("/tmp/harness-demo-seeded.json"))["ApiKeySecretArn"]
e["RequestId"] = "7d0e5c9c-0003-4f6e-9d1a-follow000003"
e["ResponseURL"] = e["ResponseURL"].replace("/cfn-responses/update?", "/cfn-responses/follow?")
e["OldResourceProperties"] = dict(e["ResourceProperties"])
props = e["ResourceProperties"]
props.pop("Image")
props.update(HarnessApiKeySecretArn=key, ManagerHostAndPort="http://127.0.0.1:5002/gratis")
print(json.dumps(e))
PY
$BIN invoke /tmp/harness-demo-follow.json >/dev/null
show_service

step "10c. Harness publishes 25.11.87300; the upgrade schedule runs: $BIN invoke events/upgrade.json"
echo 25.11.87300 >/tmp/harness-demo-latest
RUST_LOG=info $BIN invoke events/upgrade.json 2>/tmp/harness-demo-upgrade.log | $PY -c 'import json, sys
r = json.load(sys.stdin)
print("  status:", r["Status"])
for d in r["Delegates"]:
    print("  %s: %s, running %s, latest supported %s" % (d["Delegate"], d["Outcome"], d.get("RunningVersion"), d.get("LatestSupportedVersion")))
    print("    why:", d["Reason"])
    for a in d.get("Actions", []):
        print("    did:  ", a["Action"])'
grep -oE "(waiting for the delegate: [0-9]+/[0-9]+ running(, [0-9]+/[0-9]+ healthy)?|the delegate is ready)" /tmp/harness-demo-upgrade.log | sed 's/^/  /'
show_service

step "10d. The next run finds it current, and the heal keeps the upgrade"
$BIN invoke events/upgrade.json | $PY -c 'import json, sys
for d in json.load(sys.stdin)["Delegates"]:
    print("  upgrade: %s: %s (%s)" % (d["Delegate"], d["Outcome"], d.get("RunningVersion")))'
$BIN invoke events/heal-schedule.json | $PY -c 'import json, sys
for d in json.load(sys.stdin)["Delegates"]:
    print("  heal:    %s: %s" % (d["Delegate"], d["Outcome"]))'

step "11. CloudFormation Delete: $BIN invoke events/delete.json"
$BIN invoke events/delete.json >/dev/null
show_response delete
$PY <<'PY'
import boto3
ecs, ec2 = boto3.client("ecs"), boto3.client("ec2")
s = ecs.describe_services(cluster="harness-demo", services=["harness-delegate"])["services"]
print("  service status:", s[0]["status"] if s else "gone")
print("  ACTIVE revisions:", ecs.list_task_definitions(familyPrefix="harness-delegate-task-spec", status="ACTIVE")["taskDefinitionArns"])
print("  delegate security groups:", [g["GroupId"] for g in ec2.describe_security_groups(Filters=[{"Name": "group-name", "Values": ["harness-delegate-delegate"]}])["SecurityGroups"]])
PY

step "12. A heal after the Delete resurrects nothing"
$BIN invoke events/heal.json | $PY -c 'import json, sys
for d in json.load(sys.stdin)["Delegates"]:
    print("  %s: %s (%s)" % (d["Delegate"], d["Outcome"], "; ".join(d["Found"])))'
echo; echo "demo finished: the emulator stops now"
