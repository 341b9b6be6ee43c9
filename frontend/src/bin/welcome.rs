//! The first page a visitor to `/` loads: the welcome form alone, so that a first visit costs a
//! fraction of the whole app. Choosing a room loads the whole app (`main.rs`) at its address.

fn main() {
    frontend::start_welcome();
}
