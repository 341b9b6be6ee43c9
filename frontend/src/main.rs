//! The whole app (served for `/r/<room>`, and for `/` by `trunk serve`).

fn main() {
    frontend::start_app();
}
