// Probes the machine for what the tests need (see kiln-testkit).
include!("../testkit/src/probe.rs");

fn main() {
    emit_cfgs();
}
