//! Which endpoint answers a request: by path and method; a known path with another
//! method is answered 405, an unknown path 404. The endpoints are in `moodle` and
//! `bodies`.

use super::listener::Session;
use super::request::Sink;
use super::response::{Src, TEXT};
use super::E;

impl Session<'_> {
    /// Answers the request in `self.req`; `mid`: cut the body at half (the mid-body
    /// faults). Returns whether the connection stays open.
    pub(super) fn handle(&mut self, mid: bool) -> Result<bool, E> {
        let m = self.req.method.as_str();
        let get = m == "GET" || m == "HEAD";
        let post = m == "POST";
        let path = self.req.path.as_str();
        if path.starts_with("/echo") {
            return self.echo(mid);
        }
        if path.starts_with("/theme/") && get {
            return self.theme(mid);
        }
        match path {
            "/" if get => self.home(mid),
            "/health" if get => self.health(),
            "/login/index.php" if get => self.login_page(mid),
            "/login/index.php" if post => self.login(mid),
            "/my/" | "/my" | "/my/index.php" if get => self.dashboard(mid),
            "/mod/quiz/processattempt.php" if post => self.quiz_submit(mid),
            "/mod/quiz/view.php" if get => self.quiz_page(mid),
            "/upload" if post || m == "PUT" => self.upload(mid),
            "/download" if get => {
                self.read_body(Sink::Discard)?;
                self.download(mid)
            }
            "/slow" if get => self.slow(mid),
            "/status" if get => self.status(mid),
            "/ws" => self.websocket(mid),
            "/"
            | "/health"
            | "/login/index.php"
            | "/my/"
            | "/my"
            | "/my/index.php"
            | "/mod/quiz/processattempt.php"
            | "/upload"
            | "/download"
            | "/slow"
            | "/status" => {
                self.read_body(Sink::Discard)?;
                self.text(&[b"method not allowed\n"]);
                self.respond(405, TEXT, &[], Src::Text, mid)
            }
            _ => {
                self.read_body(Sink::Discard)?;
                self.text(&[b"not found\n"]);
                self.respond(404, TEXT, &[], Src::Text, mid)
            }
        }
    }
}
