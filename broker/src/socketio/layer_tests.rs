//! The Socket.IO layer driven through a session handler, without sockets:
//! packets in as text, frames out of the outbox.

use std::collections::VecDeque;

use parking_lot::Mutex;
use simd_json::prelude::*;
use tokio::sync::oneshot;

use super::*;
use crate::engineio::Outbox;
use crate::ids::Sid;

/// Accepts unless the CONNECT payload says `{"deny":true}`; answers `echo`
/// with its arguments; on `ask`, asks the client a question with an ack.
#[derive(Default)]
struct TestHandler {
    questions: Mutex<Vec<oneshot::Receiver<serde_json::Value>>>,
    disconnects: Mutex<Vec<DisconnectReason>>,
}

impl Handler for TestHandler {
    fn authorize(&self, _: &Handshake, auth: Option<&BorrowedValue<'_>>) -> Result<Accepted, ConnectError> {
        if auth.and_then(|auth| auth.get("deny")).and_then(ValueAsScalar::as_bool) == Some(true) {
            return Err(ConnectError { message: "nope".into(), data: Some(serde_json::json!({"code": 1})) });
        }
        Ok(Accepted { data: Box::new(()), expires_at: None })
    }

    fn on_connect(&self, _: &Arc<Socket>) {}

    fn on_event(&self, socket: &Arc<Socket>, event: Event<'_>) {
        match event.name {
            "echo" => {
                let args: Vec<String> = event.args.iter().map(ToString::to_string).collect();
                if let Some(id) = event.ack_id {
                    socket.ack(id, &args).expect("room in outbox");
                }
            }
            "ask" => {
                let answer = socket.emit_with_ack("question", &1).expect("room in outbox");
                self.questions.lock().push(answer);
            }
            "binary" => {
                let sizes: Vec<usize> = event.attachments.iter().map(Bytes::len).collect();
                socket.emit("sizes", &sizes).expect("room in outbox");
            }
            _ => {}
        }
    }

    fn on_disconnect(&self, _: &Arc<Socket>, reason: DisconnectReason) {
        self.disconnects.lock().push(reason);
    }
}

struct Harness {
    handler: Arc<TestHandler>,
    session: Box<dyn SessionHandler>,
    outbox: Outbox,
}

impl Harness {
    fn new() -> Self {
        let handler = Arc::new(TestHandler::default());
        let io = SocketIo::new(
            vec![("/t".to_owned(), Arc::clone(&handler) as Arc<dyn Handler>)],
            Arc::new(Metrics::default()),
        );
        let outbox = Outbox::new(1 << 20);
        let session = Session { sid: Sid::random(), handshake: Arc::default(), outbox: outbox.clone() };
        Self { handler, session: io.open(&session), outbox }
    }

    /// The text of every frame queued since the last call.
    fn sent(&self) -> Vec<String> {
        let mut batch = VecDeque::new();
        self.outbox.drain(&mut batch);
        batch
            .iter()
            .map(|bytes| {
                let header = if bytes[1] & 0x7F == 126 { 4 } else { 2 };
                String::from_utf8(bytes[header..].to_vec()).expect("text frame")
            })
            .collect()
    }
}

#[test]
fn connect_is_answered_with_a_sid_and_refusal_with_connect_error() {
    let mut harness = Harness::new();
    harness.session.on_text(r#"0/t,{"deny":true}"#).expect("valid packet");
    assert_eq!(harness.sent(), [r#"44/t,{"message":"nope","data":{"code":1}}"#]);
    harness.session.on_text("0/t,").expect("valid packet");
    let sent = harness.sent();
    assert!(sent[0].starts_with(r#"40/t,{"sid":""#), "{sent:?}");
    harness.session.on_text("0/unknown,").expect("valid packet");
    assert_eq!(harness.sent(), [r#"44/unknown,{"message":"Invalid namespace"}"#]);
}

#[test]
fn packets_in_an_invalid_state_close_the_session_like_socket_io() {
    for (setup, packet) in [("", r#"2/t,["echo"]"#), ("", "1/t,"), ("", r#"3/t,1[]"#), ("0/t,", "0/t,")] {
        let mut harness = Harness::new();
        if !setup.is_empty() {
            harness.session.on_text(setup).expect("valid packet");
        }
        assert_eq!(harness.session.on_text(packet), Err(CloseReason::ProtocolError), "{packet}");
    }
}

#[test]
fn client_acks_are_answered_and_server_acks_resolve() {
    let mut harness = Harness::new();
    harness.session.on_text("0/t,").expect("valid packet");
    harness.sent();
    harness.session.on_text(r#"2/t,5["echo","a",1]"#).expect("valid packet");
    assert_eq!(harness.sent(), [r#"43/t,5[["a","1"]]"#]);

    harness.session.on_text(r#"2/t,["ask"]"#).expect("valid packet");
    assert_eq!(harness.sent(), [r#"42/t,0["question",1]"#]);
    harness.session.on_text(r#"3/t,0["forty-two"]"#).expect("valid packet");
    let mut answer = harness.handler.questions.lock().pop().expect("asked");
    assert_eq!(answer.try_recv().expect("answered"), serde_json::json!("forty-two"));
}

#[test]
fn binary_events_wait_for_their_attachments() {
    let mut harness = Harness::new();
    harness.session.on_text("0/t,").expect("valid packet");
    harness.sent();
    let packet = r#"52-/t,["binary",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#;
    harness.session.on_text(packet).expect("valid packet");
    harness.session.on_binary(Bytes::from_static(b"abc")).expect("first attachment");
    assert!(harness.sent().is_empty());
    harness.session.on_binary(Bytes::from_static(b"de")).expect("second attachment");
    assert_eq!(harness.sent(), [r#"42/t,["sizes",[3,2]]"#]);
    // A binary message with no packet waiting for it is a protocol error.
    assert_eq!(harness.session.on_binary(Bytes::from_static(b"x")), Err(CloseReason::ProtocolError));
}

#[test]
fn malformed_packets_close_the_session() {
    for garbage in [
        "9",
        "2/t,{not json",
        r#"2/t,[1,2]"#,
        "2/t,[",
        "5-[]",
        r#"52-/t,["x",{"_placeholder":true,"num":7}]"#,
    ] {
        let mut harness = Harness::new();
        harness.session.on_text("0/t,").expect("valid packet");
        let outcome = harness.session.on_text(garbage).and_then(|()| {
            // Binary packets fail once their attachments are in.
            harness.session.on_binary(Bytes::new())?;
            harness.session.on_binary(Bytes::new())
        });
        assert_eq!(outcome, Err(CloseReason::ProtocolError), "{garbage}");
    }
}

#[test]
fn namespace_disconnect_and_session_close_reach_the_handler() {
    let mut harness = Harness::new();
    harness.session.on_text("0/t,").expect("valid packet");
    harness.session.on_text("1/t,").expect("valid packet");
    harness.session.on_text("0/t,").expect("valid packet");
    harness.session.on_close(CloseReason::PingTimeout);
    assert_eq!(
        *harness.handler.disconnects.lock(),
        [DisconnectReason::ClientDisconnect, DisconnectReason::SessionClosed(CloseReason::PingTimeout)]
    );
}

#[test]
fn random_garbage_never_panics() {
    let alphabet: Vec<char> = "0123456789/,[]{}\"-_:ab é\u{1F600}\\".chars().collect();
    for _ in 0..5000 {
        let len = rand::random_range(0..24);
        let text: String = (0..len).map(|_| alphabet[rand::random_range(0..alphabet.len())]).collect();
        let mut harness = Harness::new();
        let _ = harness.session.on_text("0/t,");
        let _ = harness.session.on_text(&text);
        let _ = crate::protocol::engineio::decode(&text);
    }
}
