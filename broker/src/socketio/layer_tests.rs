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
        Ok(Accepted { data: Box::new(()), expires_at: None, owner: None })
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
            "join" => {
                let room = crate::ids::RoomId::from(event.args[0].as_str().unwrap_or("r"));
                socket.join(&room, "joined", |_| Some(socket.sid().to_string()));
            }
            "say" => {
                let room = event.args[0].as_str().unwrap_or("r");
                socket.namespace().to_room(room, None, "said", &event.args[1].as_str());
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
    io: Arc<SocketIo>,
    session: Box<dyn SessionHandler>,
    outbox: Outbox,
}

impl Harness {
    /// A harness without connection state recovery.
    fn new() -> Self {
        Self::with_recovery(std::time::Duration::ZERO)
    }

    fn with_recovery(window: std::time::Duration) -> Self {
        let handler = Arc::new(TestHandler::default());
        let limits = PacketLimits { recovery_window: window, ..PacketLimits::default() };
        let io = Arc::new(SocketIo::with_limits(
            vec![("/t".to_owned(), Arc::clone(&handler) as Arc<dyn Handler>)],
            Arc::new(Metrics::default()),
            limits,
        ));
        let outbox = Outbox::new(1 << 20);
        let session = Session { sid: Sid::random(), handshake: Arc::default(), outbox: outbox.clone() };
        Self { handler, session: Arc::clone(&io).open(&session), io, outbox }
    }

    /// Another session on the same server.
    fn another(&self) -> Self {
        let outbox = Outbox::new(1 << 20);
        let session = Session { sid: Sid::random(), handshake: Arc::default(), outbox: outbox.clone() };
        Self {
            handler: Arc::clone(&self.handler),
            session: Arc::clone(&self.io).open(&session),
            io: Arc::clone(&self.io),
            outbox,
        }
    }

    /// Connects to `/t` with `payload`; returns the CONNECT answer's data
    /// and what was queued after it.
    fn connect(&mut self, payload: &str) -> (serde_json::Value, Vec<String>) {
        self.session.on_text(&format!("0/t,{payload}")).expect("valid packet");
        let mut sent = self.sent();
        let answer = sent.remove(0);
        let answer = answer.strip_prefix("40/t,").expect("CONNECT answered");
        (serde_json::from_str(answer).expect("JSON"), sent)
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

/// The arguments of an EVENT text frame.
fn args(text: &str) -> Vec<serde_json::Value> {
    let json = text.strip_prefix("42/t,").expect("an event");
    serde_json::from_str(json).expect("JSON array")
}

#[tokio::test]
async fn recoverable_events_carry_an_offset_and_acks_do_not() {
    let mut harness = Harness::with_recovery(std::time::Duration::from_secs(60));
    let (answer, _) = harness.connect("");
    assert!(answer["pid"].is_string() && answer["sid"].is_string(), "{answer}");
    harness.session.on_text(r#"2/t,5["echo","a"]"#).expect("valid packet");
    harness.session.on_text(r#"2/t,["join","r"]"#).expect("valid packet");
    harness.session.on_text(r#"2/t,["say","r","hi"]"#).expect("valid packet");
    harness.session.on_text(r#"2/t,["ask"]"#).expect("valid packet");
    let sent = harness.sent();
    assert_eq!(sent[0], r#"43/t,5[["a"]]"#, "an ack carries no offset");
    let said = args(&sent[1]);
    assert_eq!(said.len(), 3, "event, data, offset: {said:?}");
    assert!(said[2].as_str().is_some_and(|offset| offset.parse::<u64>().is_ok()), "{said:?}");
    assert_eq!(sent[2], r#"42/t,0["question",1]"#, "an event waiting for an ack carries no offset");
}

#[tokio::test]
async fn a_lost_session_is_recovered_once_with_what_it_missed() {
    let mut alice = Harness::with_recovery(std::time::Duration::from_secs(60));
    let (first, _) = alice.connect("");
    alice.session.on_text(r#"2/t,["join","r"]"#).expect("valid packet");
    let mut bob = alice.another();
    bob.connect("");
    bob.session.on_text(r#"2/t,["join","r"]"#).expect("valid packet");
    bob.session.on_text(r#"2/t,["say","r","one"]"#).expect("valid packet");
    let seen = alice.sent();
    let last_offset = args(seen.last().expect("alice got one"))[2].clone();
    bob.session.on_text(r#"2/t,["say","r","two"]"#).expect("valid packet");
    alice.outbox.close(CloseReason::TransportError);
    alice.session.on_close(CloseReason::TransportError);
    assert!(alice.handler.disconnects.lock().is_empty(), "suspended, not disconnected");
    bob.session.on_text(r#"2/t,["say","r","three"]"#).expect("valid packet");

    let mut back = alice.another();
    let payload = serde_json::json!({ "pid": first["pid"], "offset": last_offset }).to_string();
    let (answer, replay) = back.connect(&payload);
    assert_eq!((&answer["sid"], &answer["pid"]), (&first["sid"], &first["pid"]), "same session");
    let replayed: Vec<serde_json::Value> = replay.iter().map(|text| args(text)[1].clone()).collect();
    assert_eq!(replayed, ["two", "three"], "what it missed, once, in order");
    bob.session.on_text(r#"2/t,["say","r","four"]"#).expect("valid packet");
    assert_eq!(args(&back.sent()[0])[1], "four", "back in the room");

    let mut again = alice.another();
    let (answer, _) = again.connect(&payload);
    assert_ne!(answer["sid"], first["sid"], "a pid recovers once");
}
