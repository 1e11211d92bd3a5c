//! Writes the state diagrams into `spec/diagrams/`.
use std::path::PathBuf;

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../spec/diagrams");
    std::fs::create_dir_all(&dir)?;
    for (name, text) in looper_protocol::diagrams::state_diagrams() {
        std::fs::write(dir.join(name), text)?;
        println!("wrote spec/diagrams/{name}");
    }
    Ok(())
}
