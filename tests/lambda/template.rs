//! The deployable template (`infra/template.yaml`) passes `cfn-lint`, which also runs the SAM
//! transform over it.

use std::path::Path;
use std::process::Command;

#[test]
fn sam_template_passes_cfn_lint() {
    let template = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/template.yaml");
    let out = match Command::new("cfn-lint").arg(&template).output() {
        Ok(out) => out,
        Err(e) => panic!(
            "cfn-lint is not installed ({e}): run scripts/install-test-deps.sh \
             (pip install cfn-lint)"
        ),
    };
    assert!(
        out.status.success(),
        "cfn-lint {} failed:\n{}{}",
        template.display(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The state machine's definition as `infra/template.yaml` deploys it, with its
/// `DefinitionSubstitutions` filled in.
pub fn state_machine_definition(
    worker_arn: &str,
    master_arn: &str,
    max_concurrency: u32,
) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/statemachine.asl.json");
    let text =
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()));
    let text = text
        .replace("${WorkerFunctionArn}", worker_arn)
        .replace("${MasterFunctionArn}", master_arn)
        .replace("${MaxConcurrency}", &max_concurrency.to_string());
    assert!(
        !text.contains("${"),
        "{} has a substitution the tests do not fill in",
        path.display()
    );
    text
}

/// Every substitution of the definition is one the template gives, and every Task retries
/// exactly the functions' retryable error types (ASL has no wildcards: a new retryable error
/// must be listed).
#[test]
fn state_machine_definition_matches_the_template_and_the_error_types() {
    let template = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/template.yaml"),
    )
    .unwrap();
    for name in ["WorkerFunctionArn", "MasterFunctionArn", "MaxConcurrency"] {
        assert!(
            template.contains(&format!("        {name}: ")),
            "DefinitionSubstitutions lacks {name}"
        );
    }
    let definition: serde_json::Value =
        serde_json::from_str(&state_machine_definition("w", "m", 8)).unwrap();
    let mut want = gzship_lambda::error::retryable_error_types();
    want.sort();
    let mut tasks = Vec::new();
    collect_tasks(&definition, &mut tasks);
    assert_eq!(tasks.len(), 3, "RunTask, EndFailedJob, CompleteJob");
    for task in tasks {
        let retried: Vec<String> = task["Retry"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(|r| r["ErrorEquals"].as_array().unwrap().clone())
            .filter_map(|e| e.as_str().map(str::to_owned))
            .filter(|e| e.starts_with("Retryable."))
            .collect();
        let mut retried = retried;
        retried.sort();
        assert_eq!(retried, want, "{task}");
    }
    let map = &definition["States"]["RunTasks"];
    assert_eq!(
        map["ItemProcessor"]["ProcessorConfig"]["Mode"],
        "DISTRIBUTED"
    );
    assert_eq!(map["ToleratedFailurePercentage"], 0);
    assert_eq!(map["MaxConcurrency"], 8);
    assert_eq!(map["ResultPath"], serde_json::Value::Null);
    // A failed Map (and a failed completion) ends the execution where it failed, so that a
    // redrive re-runs it: no Catch there; a task's failure step runs inside its item.
    assert!(map.get("Catch").is_none());
    assert!(definition["States"]["CompleteJob"].get("Catch").is_none());
    let item = &map["ItemProcessor"]["States"];
    assert_eq!(item["RunTask"]["Catch"][0]["Next"], "EndFailedJob");
}

fn collect_tasks<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
    match v {
        serde_json::Value::Object(o) => {
            if o.get("Type").and_then(|t| t.as_str()) == Some("Task") {
                out.push(v);
            }
            o.values().for_each(|c| collect_tasks(c, out));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|c| collect_tasks(c, out)),
        _ => {}
    }
}
