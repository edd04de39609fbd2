// Stand-in for bore's command.
fn main() {
    let mut buf = itoa::Buffer::new();
    println!("bore stand-in, port {}", buf.format(7835u16));
}
