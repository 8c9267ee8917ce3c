//! The official Engine.IO protocol suite's cases (engine.io-protocol's
//! `test-suite`), one test each, named as the suite names them, against the
//! conformance server's Engine.IO echo at `/engine.io/`.

use tests::conformance as case;
use tests::engine::{ConformanceServer, Frame, Polling};

async fn engine_io() -> (ConformanceServer, Polling) {
    let server = ConformanceServer::start().await;
    let polling = Polling::new(server.addr, "/engine.io/");
    (server, polling)
}

mod handshake {
    mod http_long_polling {
        use super::super::*;

        #[tokio::test]
        async fn successfully_opens_a_session() {
            let (_server, polling) = engine_io().await;
            case::polling_successfully_opens_a_session(&polling).await;
        }

        #[tokio::test]
        async fn fails_with_an_invalid_eio_query_parameter() {
            let (_server, polling) = engine_io().await;
            case::polling_fails_with_an_invalid_eio_query_parameter(&polling).await;
        }

        #[tokio::test]
        async fn fails_with_an_invalid_transport_query_parameter() {
            let (_server, polling) = engine_io().await;
            case::polling_fails_with_an_invalid_transport_query_parameter(&polling).await;
        }

        #[tokio::test]
        async fn fails_with_an_invalid_request_method() {
            let (_server, polling) = engine_io().await;
            case::polling_fails_with_an_invalid_request_method(&polling).await;
        }
    }

    mod websocket {
        use super::super::*;

        #[tokio::test]
        async fn successfully_opens_a_session() {
            let (_server, polling) = engine_io().await;
            case::websocket_successfully_opens_a_session(&polling).await;
        }

        #[tokio::test]
        async fn fails_with_an_invalid_eio_query_parameter() {
            let (_server, polling) = engine_io().await;
            case::websocket_fails_with_an_invalid_eio_query_parameter(&polling).await;
        }

        #[tokio::test]
        async fn fails_with_an_invalid_transport_query_parameter() {
            let (_server, polling) = engine_io().await;
            case::websocket_fails_with_an_invalid_transport_query_parameter(&polling).await;
        }
    }
}

mod message {
    mod http_long_polling {
        use super::super::*;

        async fn round_trip(body: &[u8]) {
            let (_server, polling) = engine_io().await;
            let (sid, _) = polling.open().await;
            let push = polling.post(&sid, body).await;
            assert_eq!((push.status, push.text()), (200, "ok".to_owned()));
            let poll = polling.get(&sid).await;
            assert_eq!(poll.status, 200);
            assert_eq!(poll.body, body);
        }

        #[tokio::test]
        async fn sends_and_receives_a_payload_containing_one_plain_text_packet() {
            round_trip(b"4hello").await;
        }

        #[tokio::test]
        async fn sends_and_receives_a_payload_containing_several_plain_text_packets() {
            round_trip(b"4test1\x1e4test2\x1e4test3").await;
        }

        #[tokio::test]
        async fn sends_and_receives_a_payload_containing_plain_text_and_binary_packets() {
            round_trip(b"4hello\x1ebAQIDBA==").await;
        }

        #[tokio::test]
        async fn closes_the_session_upon_invalid_packet_format() {
            let (_server, polling) = engine_io().await;
            let (sid, _) = polling.open().await;
            assert_eq!(polling.post(&sid, b"abc").await.status, 400);
            assert_eq!(polling.get(&sid).await.status, 400);
        }

        #[tokio::test]
        async fn closes_the_session_upon_duplicate_poll_requests() {
            let (_server, polling) = engine_io().await;
            let (sid, _) = polling.open().await;
            // The suite starts the second GET 5 ms after the first; whichever
            // the server sees first is held and answered with a close, the
            // other is refused.
            let (first, second) = tokio::join!(polling.get(&sid), polling.get(&sid));
            let mut answers = [(first.status, first.text()), (second.status, second.text())];
            answers.sort();
            assert_eq!(answers[0], (200, "1".to_owned()));
            assert!(matches!(answers[1].0, 400 | 500), "{answers:?}");
            assert_eq!(polling.get(&sid).await.status, 400);
        }
    }

    mod websocket {
        use super::super::*;

        #[tokio::test]
        async fn sends_and_receives_a_plain_text_packet() {
            let (_server, polling) = engine_io().await;
            let mut socket = polling.websocket("EIO=4&transport=websocket").await.expect("upgrade");
            socket.next_text().await;
            socket.send("4hello").await;
            assert_eq!(socket.next_not_ping().await, Frame::Text("4hello".to_owned()));
        }

        #[tokio::test]
        async fn sends_and_receives_a_binary_packet() {
            let (_server, polling) = engine_io().await;
            let mut socket = polling.websocket("EIO=4&transport=websocket").await.expect("upgrade");
            socket.next_text().await;
            socket.send_binary(&[1, 2, 3, 4]).await;
            assert_eq!(socket.next_not_ping().await, Frame::Binary(vec![1, 2, 3, 4]));
        }

        #[tokio::test]
        async fn closes_the_session_upon_invalid_packet_format() {
            let (_server, polling) = engine_io().await;
            let mut socket = polling.websocket("EIO=4&transport=websocket").await.expect("upgrade");
            socket.next_text().await;
            socket.send("abc").await;
            socket.expect_closed().await;
        }
    }
}

mod heartbeat {
    mod http_long_polling {
        use super::super::*;

        #[tokio::test]
        async fn sends_ping_pong_packets() {
            let (_server, polling) = engine_io().await;
            case::polling_sends_ping_pong_packets(&polling).await;
        }

        #[tokio::test]
        async fn closes_the_session_upon_ping_timeout() {
            let (_server, polling) = engine_io().await;
            case::polling_closes_the_session_upon_ping_timeout(&polling).await;
        }
    }

    mod websocket {
        use super::super::*;

        #[tokio::test]
        async fn sends_ping_pong_packets() {
            let (_server, polling) = engine_io().await;
            case::websocket_sends_ping_pong_packets(&polling).await;
        }

        #[tokio::test]
        async fn closes_the_session_upon_ping_timeout() {
            let (_server, polling) = engine_io().await;
            case::websocket_closes_the_session_upon_ping_timeout(&polling).await;
        }
    }
}

mod close {
    mod http_long_polling {
        use super::super::*;

        #[tokio::test]
        async fn forcefully_closes_the_session() {
            let (_server, polling) = engine_io().await;
            case::polling_forcefully_closes_the_session(&polling).await;
        }
    }

    mod websocket {
        use super::super::*;

        #[tokio::test]
        async fn forcefully_closes_the_session() {
            let (_server, polling) = engine_io().await;
            case::websocket_forcefully_closes_the_session(&polling).await;
        }
    }
}

mod upgrade {
    use super::*;

    #[tokio::test]
    async fn successfully_upgrades_from_http_long_polling_to_websocket() {
        let (_server, polling) = engine_io().await;
        case::successfully_upgrades_from_http_long_polling_to_websocket(&polling, true).await;
    }

    #[tokio::test]
    async fn ignores_http_requests_with_same_sid_after_upgrade() {
        let (_server, polling) = engine_io().await;
        case::ignores_http_requests_with_same_sid_after_upgrade(&polling, true).await;
    }

    #[tokio::test]
    async fn ignores_websocket_connection_with_same_sid_after_upgrade() {
        let (_server, polling) = engine_io().await;
        case::ignores_websocket_connection_with_same_sid_after_upgrade(&polling, true).await;
    }
}
