//! `/debug/pprof/`: the answers Go's `net/http/pprof` gives, for any HTTP server to serve,
//! so that `go tool pprof http://HOST:PORT/debug/pprof/heap` reads a running program.
//!
//! | path | body |
//! |---|---|
//! | `/debug/pprof/` | an index of the rest (text) |
//! | `/debug/pprof/heap` | the heap profile, `inuse_space` shown by default |
//! | `/debug/pprof/allocs` | the same profile, `alloc_space` shown by default |
//! | `/debug/pprof/goroutine` | the goroutine profile; `?debug=1` (or 2): `dump()`'s text |
//! | `/debug/pprof/sched_latency` | the scheduling-latency histogram, Prometheus's text format |
//! | `/debug/pprof/symbol` | `num_symbols: 0`: no names (see below) |
//!
//! `go tool pprof` fetching a profile by URL also asks the server for the names of the
//! addresses it could not symbolise itself (`POST /debug/pprof/symbol`), and fails if the
//! answer is not a 200. Go's runtime knows every function's name (`FuncForPC`); this
//! process knows only its dynamic symbols (`dladdr`'s nearest one, which is some other,
//! exported function for most Rust code), and a wrong name is worse than none. So the answer
//! names none, whatever the method and the addresses, and pprof uses what it read from the
//! binaries themselves, which the profile's mappings name with their build IDs.
//!
//! The server stays the caller's: [`respond`] maps a request target to a [`Response`].

use std::fmt;

/// An answer to one request.
#[derive(Clone, PartialEq, Eq)]
pub struct Response {
    /// The HTTP status: 200, 404, or 500 when a profile could not be written.
    pub status: u16,
    /// The `Content-Type` header's value.
    pub content_type: &'static str,
    /// The body.
    pub body: Vec<u8>,
}

impl fmt::Debug for Response {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Response")
            .field("status", &self.status)
            .field("content_type", &self.content_type)
            .field("body_len", &self.body.len())
            .finish()
    }
}

impl Response {
    /// The status line's reason phrase.
    pub fn reason(&self) -> &'static str {
        match self.status {
            200 => "OK",
            404 => "Not Found",
            _ => "Internal Server Error",
        }
    }

    fn text(status: u16, body: impl Into<Vec<u8>>) -> Response {
        Response {
            status,
            content_type: "text/plain; charset=utf-8",
            body: body.into(),
        }
    }

    /// A profile written by `write`, or 500 with the error.
    fn profile(write: impl FnOnce(&mut Vec<u8>) -> std::io::Result<()>) -> Response {
        let mut body = Vec::new();
        match write(&mut body) {
            Ok(()) => Response {
                status: 200,
                content_type: "application/octet-stream",
                body,
            },
            Err(e) => Response::text(500, format!("cannot write the profile: {e}\n")),
        }
    }
}

/// The prefix this handler answers under.
pub const PREFIX: &str = "/debug/pprof/";

const INDEX: &str = "\
/debug/pprof/

heap           sampled live heap (go tool pprof http://HOST/debug/pprof/heap)
allocs         every sampled allocation since the start (the heap profile, alloc_space)
goroutine      stacks of all live coroutines (?debug=1: a text dump)
sched_latency  the scheduling-latency histogram (Prometheus text format)
";

/// The answer to a request for `target` (the request line's path, with its query), or
/// `None` if it is not under [`PREFIX`] (nor `/debug/pprof` itself), for the caller to
/// serve otherwise.
pub fn respond(target: &str) -> Option<Response> {
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    let name = if path == "/debug/pprof" {
        ""
    } else {
        path.strip_prefix(PREFIX)?
    };
    let debug = query
        .split('&')
        .filter_map(|kv| kv.strip_prefix("debug="))
        .any(|v| v != "0");
    Some(match name {
        "" => Response::text(200, INDEX),
        "heap" => Response::profile(tessera::profile::write_heap),
        "allocs" => Response::profile(tessera::profile::write_allocs),
        "goroutine" if debug => Response::text(200, crate::dump()),
        "goroutine" => Response::profile(|b| super::write_goroutine(b).map(drop)),
        "sched_latency" => {
            let mut body = Vec::new();
            match super::write_sched_latency(&mut body) {
                Ok(()) => Response {
                    status: 200,
                    content_type: "text/plain; version=0.0.4",
                    body,
                },
                Err(e) => Response::text(500, format!("{e}\n")),
            }
        }
        "symbol" => Response::text(200, "num_symbols: 0\n"),
        _ => Response::text(404, format!("unknown profile: {name}\n")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes() {
        assert!(respond("/").is_none());
        assert!(respond("/debug/pprofx").is_none());
        let index = respond("/debug/pprof/").unwrap();
        assert_eq!(index.status, 200);
        assert!(String::from_utf8(index.body).unwrap().contains("goroutine"));
        assert_eq!(respond("/debug/pprof").unwrap().status, 200);
        assert_eq!(respond("/debug/pprof/nope").unwrap().status, 404);
        assert_eq!(respond("/debug/pprof/symbol").unwrap().status, 200);
        let latency = respond("/debug/pprof/sched_latency").unwrap();
        assert_eq!(latency.status, 200);
        assert!(
            String::from_utf8(latency.body)
                .unwrap()
                .contains("le=\"+Inf\"")
        );
        let heap = respond("/debug/pprof/heap?gc=1").unwrap();
        assert_eq!(heap.status, 200);
        // gzip's magic number.
        assert_eq!(heap.body[..2], [0x1f, 0x8b]);
        let dump = respond("/debug/pprof/goroutine?debug=2").unwrap();
        assert!(dump.content_type.starts_with("text/plain"));
    }
}
