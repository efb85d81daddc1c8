//! The workspace's layering, as DESIGN.md ("Crates") and docs/architecture.md draw it,
//! checked from the crates' manifests: dependencies point down only, `archive-cmd` and
//! `recovery` never depend on each other, `pgclient` knows nothing of the repository, and
//! `pg` depends on nothing at all. A new dependency that breaks the drawing fails here,
//! not in a review months later.

use std::collections::BTreeSet;
use std::path::Path;

/// Each crate folder, and the workspace crates it may depend on (normal dependencies).
const ALLOWED: &[(&str, &[&str])] = &[
    ("pg", &[]),
    ("pgclient", &["tidemark-pg"]),
    ("store", &["tidemark-pg"]),
    ("archive-cmd", &["tidemark-pg", "tidemark-store"]),
    ("recovery", &["tidemark-pg", "tidemark-store"]),
    (
        "agent",
        &[
            "tidemark-pg",
            "tidemark-pgclient",
            "tidemark-store",
            "tidemark-archive-cmd",
            "tidemark-recovery",
        ],
    ),
];

/// The `tidemark-*` names and every other dependency under `[dependencies]` of a manifest
/// (not dev- or build-dependencies), read line by line: each dependency is one line,
/// `name = …` or `name.workspace = true`.
fn dependencies(manifest: &Path) -> BTreeSet<String> {
    let text = std::fs::read_to_string(manifest)
        .unwrap_or_else(|e| panic!("read {}: {e}", manifest.display()));
    let mut in_dependencies = false;
    let mut out = BTreeSet::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            in_dependencies = line == "[dependencies]";
            continue;
        }
        if !in_dependencies || line.is_empty() || line.starts_with('#') {
            continue;
        }
        let name = line
            .split(['=', '.'])
            .next()
            .unwrap_or_default()
            .trim()
            .to_string();
        if !name.is_empty() {
            out.insert(name);
        }
    }
    out
}

#[test]
fn dependencies_point_down_only() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    // The reader must see what is there, or the check below could never fail.
    let agent = dependencies(&root.join("agent/Cargo.toml"));
    assert!(
        agent.contains("tidemark-store") && agent.contains("clap"),
        "agent/Cargo.toml read as {agent:?}"
    );
    let mut problems = Vec::new();
    for (folder, allowed) in ALLOWED {
        let deps = dependencies(&root.join(folder).join("Cargo.toml"));
        for dep in deps.iter().filter(|d| d.starts_with("tidemark-")) {
            if !allowed.contains(&dep.as_str()) {
                problems.push(format!("{folder}/ depends on {dep}"));
            }
        }
        if *folder == "pg" && !deps.is_empty() {
            problems.push(format!("pg/ must stay std only, but depends on {deps:?}"));
        }
        if *folder == "pgclient" && deps.contains("clap") {
            problems.push("pgclient/ depends on clap: only agent parses arguments".into());
        }
    }
    assert!(
        problems.is_empty(),
        "the layering of DESIGN.md is broken:\n{}",
        problems.join("\n")
    );
}

#[test]
fn every_workspace_crate_is_in_the_drawing() {
    // A crate added to the workspace without a place in ALLOWED would escape the check.
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let manifest = std::fs::read_to_string(root.join("Cargo.toml")).unwrap();
    let members_line = manifest
        .lines()
        .find(|l| l.trim_start().starts_with("members"))
        .expect("a members line in the workspace manifest");
    let members: Vec<&str> = members_line
        .split('"')
        .skip(1)
        .step_by(2)
        .filter(|m| *m != "tests")
        .collect();
    let drawn: Vec<&str> = ALLOWED.iter().map(|(folder, _)| *folder).collect();
    for member in &members {
        assert!(
            drawn.contains(member),
            "workspace member {member} has no place in the layering check (tests/it/layout.rs)"
        );
    }
    assert_eq!(members.len(), drawn.len(), "{members:?} against {drawn:?}");
}
