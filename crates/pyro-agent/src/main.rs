//! The guest agent binary: see the library for what it does.

fn main() {
    pyro_agent::run(None);
}
