//! What tests read from the deployable template (`infra/template.yaml`): the template as
//! CloudFormation JSON (decoded by cfn-lint's own parser, so `!Sub` and friends arrive as
//! `{"Fn::Sub": ...}`), and a small, explicit resolver of the intrinsics it uses, with the
//! test's values for its parameters, resources and pseudo parameters. The resolver knows only
//! what the template uses today and panics, naming the intrinsic, on anything else: a template
//! change that needs more must extend it here, not be silently misread.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;

use serde_json::{Map, Value, json};

/// The account moto uses for everything it creates.
pub const ACCOUNT_ID: &str = "123456789012";
/// The stack name the resolver gives `AWS::StackName`.
pub const STACK_NAME: &str = "gzship-test";

/// `infra/template.yaml` decoded by cfn-lint (`cfnlint.decode`), as JSON.
pub fn template() -> Value {
    const DECODE: &str = r#"
import json, sys
try:
    from cfnlint.decode import decode
except ImportError as e:
    sys.exit(f"cfn-lint is not installed ({e}): run scripts/install-test-deps.sh")
template, problems = decode(sys.argv[1])
if problems:
    sys.exit("\n".join(str(p) for p in problems))
json.dump(template, sys.stdout)
"#;
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../infra/template.yaml");
    let out = Command::new("python3")
        .args(["-c", DECODE])
        .arg(&path)
        .output()
        .unwrap_or_else(|e| panic!("run python3 to decode {}: {e}", path.display()));
    assert!(
        out.status.success(),
        "decode {}: {}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("cfnlint.decode prints JSON")
}

/// Resolves the template's intrinsics for one deployment: parameters (defaults from the
/// template, overridden by the test), the stack's resources and their attributes (given by the
/// test, as AWS would name them), and its Conditions (evaluated from the parameters).
#[derive(Debug)]
pub struct Resolver {
    template: Value,
    params: BTreeMap<String, Value>,
    refs: BTreeMap<String, String>,
    attrs: BTreeMap<String, String>,
}

impl Resolver {
    /// A resolver over `template` with its parameters' defaults, `bucket` as the `Bucket`
    /// resource and made-up names for the other resources.
    pub fn new(template: Value, bucket: &str) -> Resolver {
        let mut params = BTreeMap::new();
        for (name, p) in template["Parameters"].as_object().expect("Parameters") {
            if let Some(default) = p.get("Default") {
                params.insert(name.clone(), param_value(p, default.clone()));
            }
        }
        let region = gzship_testkit::s3::REGION;
        let function_arn =
            |name: &str| format!("arn:aws:lambda:{region}:{ACCOUNT_ID}:function:{name}");
        let queue_arn = |name: &str| format!("arn:aws:sqs:{region}:{ACCOUNT_ID}:{name}");
        let queue_url =
            |name: &str| format!("https://sqs.{region}.amazonaws.com/{ACCOUNT_ID}/{name}");
        let refs = BTreeMap::from([
            ("Bucket".into(), bucket.to_owned()),
            (
                "SshSecret".into(),
                format!("arn:aws:secretsmanager:{region}:{ACCOUNT_ID}:secret:gzship-ssh-AbCdEf"),
            ),
            ("WorkerFunction".into(), "gzship-test-worker".into()),
            ("MasterFunction".into(), "gzship-test-master".into()),
            ("ArrivalQueue".into(), queue_url("gzship-test-arrivals")),
            (
                "ArrivalDeadLetterQueue".into(),
                queue_url("gzship-test-arrivals-dlq"),
            ),
            (
                "JobStateMachine".into(),
                format!("arn:aws:states:{region}:{ACCOUNT_ID}:stateMachine:{STACK_NAME}-jobs"),
            ),
        ]);
        let role_arn = |name: &str| format!("arn:aws:iam::{ACCOUNT_ID}:role/{STACK_NAME}-{name}");
        let attrs = BTreeMap::from([
            ("WorkerRole.Arn".into(), role_arn("WorkerRole")),
            ("MasterRole.Arn".into(), role_arn("MasterRole")),
            ("StateMachineRole.Arn".into(), role_arn("StateMachineRole")),
            (
                "WorkerFunction.Arn".into(),
                function_arn("gzship-test-worker"),
            ),
            (
                "MasterFunction.Arn".into(),
                function_arn("gzship-test-master"),
            ),
            ("ArrivalQueue.Arn".into(), queue_arn("gzship-test-arrivals")),
            (
                "ArrivalDeadLetterQueue.Arn".into(),
                queue_arn("gzship-test-arrivals-dlq"),
            ),
        ]);
        Resolver {
            template,
            params,
            refs,
            attrs,
        }
    }

    /// Sets a parameter as a deployment would (a `CommaDelimitedList` is split).
    pub fn set_param(&mut self, name: &str, value: &str) -> &mut Self {
        let p = self.template["Parameters"]
            .get(name)
            .unwrap_or_else(|| panic!("the template has no parameter {name}"));
        let value = param_value(p, json!(value));
        self.params.insert(name.to_owned(), value);
        self
    }

    /// A resource's properties, resolved.
    pub fn properties(&self, resource: &str) -> Value {
        let props = &self.template["Resources"][resource]["Properties"];
        assert!(props.is_object(), "the template has no resource {resource}");
        self.resolve(props).unwrap_or(Value::Null)
    }

    /// The statements of every inline policy of `role` (an `AWS::IAM::Role`), resolved: what
    /// the role may do beyond its managed policies (which only grant CloudWatch Logs and, in a
    /// VPC, network interfaces).
    pub fn role_statements(&self, role: &str) -> Vec<Value> {
        let props = self.properties(role);
        let mut out = Vec::new();
        for policy in props["Policies"].as_array().expect("the role has Policies") {
            let statements = &policy["PolicyDocument"]["Statement"];
            match statements {
                Value::Array(s) => out.extend(s.iter().cloned()),
                s => out.push(s.clone()),
            }
        }
        out
    }

    /// A function's environment variables, resolved (empty values left out, as Lambda's
    /// runtime and the functions' config treat them).
    pub fn function_env(&self, function: &str) -> BTreeMap<String, String> {
        let props = self.properties(function);
        props["Environment"]["Variables"]
            .as_object()
            .expect("the function has Environment.Variables")
            .iter()
            .map(|(k, v)| (k.clone(), scalar(v)))
            .filter(|(_, v)| !v.is_empty())
            .collect()
    }

    /// Whether a condition of the template's `Conditions` holds.
    pub fn condition(&self, name: &str) -> bool {
        let c = self.template["Conditions"]
            .get(name)
            .unwrap_or_else(|| panic!("the template has no condition {name}"));
        self.truth(c)
    }

    fn truth(&self, v: &Value) -> bool {
        let (f, arg) = intrinsic(v).unwrap_or_else(|| panic!("not a condition: {v}"));
        let args = || {
            arg.as_array()
                .unwrap_or_else(|| panic!("{f} takes a list: {v}"))
        };
        match f {
            "Fn::Equals" => {
                let a = args();
                self.resolve(&a[0]) == self.resolve(&a[1])
            }
            "Fn::Not" => !self.truth(&args()[0]),
            "Fn::And" => args().iter().all(|c| self.truth(c)),
            "Fn::Or" => args().iter().any(|c| self.truth(c)),
            "Condition" => self.condition(arg.as_str().expect("a condition's name")),
            _ => panic!("the test's resolver does not evaluate {f} in a condition: {v}"),
        }
    }

    /// Resolves every intrinsic in `v`; `None` is `AWS::NoValue` (dropped from its object or
    /// list).
    pub fn resolve(&self, v: &Value) -> Option<Value> {
        if let Some((f, arg)) = intrinsic(v) {
            return self.intrinsic(f, arg);
        }
        Some(match v {
            Value::Object(o) => Value::Object(
                o.iter()
                    .filter_map(|(k, v)| Some((k.clone(), self.resolve(v)?)))
                    .collect::<Map<_, _>>(),
            ),
            Value::Array(a) => Value::Array(a.iter().filter_map(|v| self.resolve(v)).collect()),
            other => other.clone(),
        })
    }

    fn intrinsic(&self, f: &str, arg: &Value) -> Option<Value> {
        match f {
            "Ref" => self.reference(arg.as_str().expect("Ref names something")),
            "Fn::GetAtt" => {
                let name = match arg {
                    Value::Array(a) => format!("{}.{}", scalar(&a[0]), scalar(&a[1])),
                    other => scalar(other),
                };
                Some(json!(self.attribute(&name)))
            }
            "Fn::Sub" => {
                let (text, vars) = match arg {
                    Value::Array(a) => (scalar(&a[0]), a[1].as_object().cloned()),
                    other => (scalar(other), None),
                };
                Some(json!(self.substitute(&text, vars.as_ref())))
            }
            "Fn::If" => {
                let a = arg.as_array().expect("Fn::If takes a list");
                let branch = if self.condition(a[0].as_str().expect("a condition's name")) {
                    &a[1]
                } else {
                    &a[2]
                };
                self.resolve(branch)
            }
            "Fn::Join" => {
                let a = arg.as_array().expect("Fn::Join takes a list");
                let parts = self.resolve(&a[1]).unwrap_or(json!([]));
                let parts: Vec<String> = parts
                    .as_array()
                    .expect("Fn::Join joins a list")
                    .iter()
                    .map(scalar)
                    .collect();
                Some(json!(parts.join(&scalar(&a[0]))))
            }
            _ => panic!("the test's resolver does not know {f}: add it to tests/lambda/cfn.rs"),
        }
    }

    fn reference(&self, name: &str) -> Option<Value> {
        let region = gzship_testkit::s3::REGION;
        Some(match name {
            "AWS::NoValue" => return None,
            "AWS::Partition" => json!("aws"),
            "AWS::Region" => json!(region),
            "AWS::AccountId" => json!(ACCOUNT_ID),
            "AWS::StackName" => json!(STACK_NAME),
            _ => match (self.params.get(name), self.refs.get(name)) {
                (Some(p), _) => p.clone(),
                (None, Some(r)) => json!(r),
                (None, None) => panic!(
                    "the test's resolver has no value for Ref {name}: give the parameter or \
                     add the resource to tests/lambda/cfn.rs"
                ),
            },
        })
    }

    fn attribute(&self, name: &str) -> String {
        self.attrs.get(name).cloned().unwrap_or_else(|| {
            panic!(
                "the test's resolver has no value for GetAtt {name}: add it to tests/lambda/cfn.rs"
            )
        })
    }

    fn substitute(&self, text: &str, vars: Option<&Map<String, Value>>) -> String {
        let mut out = String::new();
        let mut rest = text;
        while let Some(at) = rest.find("${") {
            out.push_str(&rest[..at]);
            let end = rest[at..].find('}').expect("an unclosed ${ in Fn::Sub") + at;
            let name = &rest[at + 2..end];
            let value = match vars.and_then(|v| v.get(name)) {
                Some(v) => scalar(&self.resolve(v).expect("a Fn::Sub variable has a value")),
                None if name.contains('.') && !name.starts_with("AWS::") => self.attribute(name),
                None => scalar(&self.reference(name).expect("Fn::Sub of AWS::NoValue")),
            };
            out.push_str(&value);
            rest = &rest[end + 1..];
        }
        out.push_str(rest);
        out
    }
}

/// `{"Ref": ...}`, `{"Fn::...": ...}` or `{"Condition": ...}`: the function and its argument.
fn intrinsic(v: &Value) -> Option<(&str, &Value)> {
    let o = v.as_object()?;
    let (k, arg) = o.iter().next()?;
    (o.len() == 1 && (k == "Ref" || k == "Condition" || k.starts_with("Fn::")))
        .then_some((k.as_str(), arg))
}

/// A parameter's value as `Ref` gives it: a list for a `CommaDelimitedList`.
fn param_value(param: &Value, value: Value) -> Value {
    if param["Type"] == "CommaDelimitedList" {
        let text = scalar(&value);
        json!(text.split(',').collect::<Vec<_>>())
    } else {
        json!(scalar(&value))
    }
}

/// A resolved scalar as text (numbers and booleans as CloudFormation writes them).
fn scalar(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        other => panic!("expected a scalar, got {other}"),
    }
}

/// The resolver's own checks, on a template of its own: every intrinsic it knows.
#[test]
fn the_resolver_resolves_what_the_template_uses() {
    let template = json!({
        "Parameters": {
            "Prefix": {"Type": "String", "Default": "gzship/"},
            "Key": {"Type": "String", "Default": ""},
            "Subnets": {"Type": "CommaDelimitedList", "Default": ""}
        },
        "Conditions": {
            "HasKey": {"Fn::Not": [{"Fn::Equals": [{"Ref": "Key"}, ""]}]},
            "InVpc": {"Fn::Not": [{"Fn::Equals": [{"Fn::Join": ["", {"Ref": "Subnets"}]}, ""]}]},
            "Both": {"Fn::And": [{"Condition": "HasKey"}, {"Condition": "InVpc"}]}
        },
        "Resources": {"R": {"Properties": {
            "A": {"Fn::Sub": "arn:${AWS::Partition}:s3:::${Bucket}/${Prefix}*"},
            "B": {"Fn::If": ["HasKey", {"Ref": "Key"}, {"Ref": "AWS::NoValue"}]},
            "C": [{"Fn::GetAtt": ["WorkerFunction", "Arn"]}, {"Fn::Sub": "${WorkerFunction.Arn}:*"}],
            "D": {"Fn::Sub": ["${X}-${AWS::StackName}", {"X": {"Ref": "Prefix"}}]}
        }}}
    });
    let mut r = Resolver::new(template, "bkt");
    let p = r.properties("R");
    assert_eq!(p["A"], "arn:aws:s3:::bkt/gzship/*");
    assert!(p.get("B").is_none(), "{p}");
    assert!(!r.condition("InVpc") && !r.condition("Both"));
    let worker = "arn:aws:lambda:us-east-1:123456789012:function:gzship-test-worker";
    assert_eq!(p["C"], json!([worker, format!("{worker}:*")]));
    assert_eq!(p["D"], "gzship/-gzship-test");
    r.set_param("Key", "k1").set_param("Subnets", "a,b");
    assert_eq!(r.properties("R")["B"], "k1");
    assert!(r.condition("Both"));
}
