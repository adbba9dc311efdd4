//! schema.graphql is what `flashstock schema` prints.

#[test]
fn schema_file_matches_the_served_schema() {
    let committed = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/schema.graphql"))
        .expect("schema.graphql exists at the repository root");
    let served = flashstock::graphql::sdl();
    assert!(
        committed == served,
        "schema.graphql is out of date: run `cargo run -- schema > schema.graphql`"
    );
}

#[test]
fn schema_command_prints_the_sdl() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_flashstock"))
        .arg("schema")
        .output()
        .expect("binary runs");
    assert!(output.status.success());
    assert_eq!(
        String::from_utf8(output.stdout).unwrap(),
        flashstock::graphql::sdl()
    );
}
