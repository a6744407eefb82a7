//! The README's runnable blocks (a `sh` block right after `<!-- runnable -->`), run as written
//! against the emulator they start: a command there that stops working fails the tests. Only
//! `cargo build` is left out (cargo built the binary for this test) and the binary's path is the
//! one cargo built.

/// The runnable blocks of the README, in order.
fn runnable_blocks(readme: &str) -> Vec<String> {
    let mut blocks = Vec::new();
    let mut lines = readme.lines();
    while let Some(line) = lines.next() {
        if line.trim() != "<!-- runnable -->" {
            continue;
        }
        assert_eq!(
            lines.next().map(str::trim),
            Some("```sh"),
            "a runnable mark before no sh block"
        );
        let block: Vec<&str> = lines.by_ref().take_while(|l| l.trim() != "```").collect();
        blocks.push(block.join("\n"));
    }
    blocks
}

/// The runnable block and the demo both use port 5000: one at a time.
static PORT_5000: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn the_readmes_runnable_blocks_run_as_written() {
    let _port = PORT_5000.lock().unwrap_or_else(|p| p.into_inner());
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let blocks = runnable_blocks(&readme);
    assert!(!blocks.is_empty(), "no runnable block in the README");
    let bin = env!("CARGO_BIN_EXE_harness-ecs-delegate-bootstrap");
    for block in blocks {
        let script: Vec<String> = block
            .lines()
            .filter(|l| l.trim() != "cargo build")
            .map(|l| l.replace("target/debug/harness-ecs-delegate-bootstrap", bin))
            .collect();
        // Whatever fails, the emulator a block started is stopped.
        let script = format!("trap 'make -s emulator-stop' EXIT\n{}", script.join("\n"));
        let out = std::process::Command::new("bash")
            .args(["-euo", "pipefail", "-c", &script])
            .current_dir(root)
            .output()
            .expect("bash runs");
        assert!(
            out.status.success(),
            "the README's block failed:\n{block}\n--- stdout\n{}\n--- stderr\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

mod support;

fn template() -> serde_json::Value {
    support::template_json()
}

/// What the README's commands for a real account name exists in the template: the parameters
/// given to `--parameter-overrides`, the outputs read by key, the function `sam local invoke`
/// runs and the variable its `env.json` sets, the function's log group.
#[test]
fn the_readmes_account_commands_name_what_the_template_has() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let t = template();
    let mut overrides = 0;
    for line in readme
        .lines()
        .filter(|l| l.contains("--parameter-overrides"))
    {
        let given = line.split("--parameter-overrides").nth(1).unwrap();
        for pair in given.split_whitespace().filter(|p| p.contains('=')) {
            let name = pair.split('=').next().unwrap();
            let p = &t["Parameters"][name];
            assert!(
                p.is_object(),
                "the README overrides {name}, no parameter of the template"
            );
            overrides += 1;
        }
    }
    assert!(overrides >= 3, "the README shows no --parameter-overrides");
    for key in readme.split("OutputKey=='").skip(1) {
        let key = key.split('\'').next().unwrap();
        assert!(
            t["Outputs"][key].is_object(),
            "the README reads output {key}, which the template lacks"
        );
    }
    for name in readme.split("sam local invoke ").skip(1) {
        let name = name.split_whitespace().next().unwrap();
        assert_eq!(
            t["Resources"][name]["Type"], "AWS::Serverless::Function",
            "sam local invoke {name}"
        );
        let env = &t["Resources"][name]["Properties"]["Environment"]["Variables"];
        assert!(
            env["HEAL_OWNER"].is_object(),
            "{name} has no HEAL_OWNER for env.json to set"
        );
    }
    let group = t["Resources"]["BootstrapFunctionLogGroup"]["Properties"]["LogGroupName"]
        ["Fn::Sub"]
        .as_str()
        .unwrap()
        .replace("${AWS::StackName}", "<stack>");
    assert!(
        readme.contains(&format!("aws logs tail {group}")),
        "the README tails another group than {group}"
    );
    for output in t["Outputs"].as_object().unwrap().keys() {
        assert!(
            readme.contains(output.as_str()),
            "the README does not mention output {output}"
        );
    }
}

/// The README's properties table names, for each property, the stack parameter that sets it
/// (or — for none); the template agrees.
#[test]
fn the_properties_table_says_which_are_stack_parameters() {
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    let t = template();
    let props = &t["Resources"]["HarnessDelegate"]["Properties"];
    let rows: Vec<&str> = readme
        .lines()
        .skip_while(|l| !l.starts_with("| property | meaning | default | stack parameter |"))
        .skip(2)
        .take_while(|l| l.starts_with('|'))
        .collect();
    assert!(
        rows.len() >= 20,
        "no properties table with a stack parameter column"
    );
    let mut named = std::collections::BTreeSet::new();
    for row in rows {
        let cells: Vec<&str> = row.trim_matches('|').split('|').map(str::trim).collect();
        let split = |c: &str| -> Vec<String> {
            c.split([',', '/']).map(|x| x.trim().to_string()).collect()
        };
        let (properties, parameters) = (split(cells[0]), split(cells[3]));
        assert_eq!(properties.len(), parameters.len(), "{row}");
        for (property, parameter) in properties.iter().zip(&parameters) {
            let value = props[property.as_str()].to_string();
            if parameter == "—" {
                // A resource of the stack (its record table) or its name may reach it; a
                // parameter may not.
                let from_parameter = t["Parameters"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .any(|p| value.contains(&format!("\"{p}\"")));
                assert!(
                    !from_parameter,
                    "{property} comes from a parameter the table does not name: {value}"
                );
                continue;
            }
            assert!(
                t["Parameters"][parameter.as_str()].is_object(),
                "no parameter {parameter}"
            );
            assert!(
                value.contains(&format!("\"{parameter}\"")),
                "parameter {parameter} does not reach {property}: {value}"
            );
            named.insert(parameter.clone());
        }
    }
    // Every parameter that reaches the delegate is in the table.
    for (name, _) in t["Parameters"].as_object().unwrap() {
        let reaches = props
            .as_object()
            .unwrap()
            .values()
            .any(|v| v.to_string().contains(&format!("{{\"Ref\":\"{name}\"}}")));
        assert!(
            !reaches || named.contains(name),
            "parameter {name} is missing from the table"
        );
    }
}

/// `make demo`, as the README's first block runs it (the build is cargo's for this test):
/// install, update, break, heal, delete, each step as the README describes it.
#[test]
fn make_demo_runs_as_the_readme_says() {
    let _port = PORT_5000.lock().unwrap_or_else(|p| p.into_inner());
    let root = env!("CARGO_MANIFEST_DIR");
    let readme = std::fs::read_to_string(format!("{root}/README.md")).unwrap();
    assert!(
        readme.contains("make demo   # "),
        "the README no longer shows make demo"
    );
    let out = std::process::Command::new("bash")
        .args([
            "-c",
            "make -s venv && cargo build --quiet --example ecs_simulator && scripts/demo.sh",
        ])
        .env(
            "DEMO_BIN",
            env!("CARGO_BIN_EXE_harness-ecs-delegate-bootstrap"),
        )
        .current_dir(root)
        .output()
        .expect("bash runs");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "make demo failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for said in [
        "waiting for the delegate: 0/1 running, 0/1 healthy",
        "waiting for the delegate: 1/1 running, 0/1 healthy",
        "the delegate is ready",
        "Status: FAILED",
        "harness/delegate:no-such-tag: not found (×2). Check: that the image",
        "broken-delegate's service is INACTIVE",
        "\"Status\": \"SUCCESS\"",
        "harness-demo/harness-delegate: Repaired",
        "image=harness/delegate:25.10.87100",
        "harness-demo/harness-delegate: Upgraded, running 25.11.87300, latest supported 25.11.87300",
        "image=harness/delegate:25.11.87300",
        "upgrade: harness-demo/harness-delegate: UpToDate (25.11.87300)",
        "heal:    harness-demo/harness-delegate: Converged",
        "resurrects nothing",
        "NotManaged",
    ] {
        assert!(
            stdout.contains(said),
            "the demo did not say {said:?}:\n{stdout}"
        );
    }
}
