// Stand-in for the backend.
fn main() {
    let mut buf = itoa::Buffer::new();
    println!("listening on {}", buf.format(8000u16));
}
