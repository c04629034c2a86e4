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
