//! The official Socket.IO protocol suite's cases (socket.io-protocol's
//! `test-suite`), one test each, named as the suite names them, against the
//! conformance server's `/socket.io/` endpoint: its Engine.IO part (the
//! same cases as the Engine.IO suite, at this path) and its Socket.IO part
//! (namespaces `/` and `/custom`, `message-back`, `message-with-ack`).

use tests::conformance as case;
use tests::engine::{ConformanceServer, Frame, Polling, RawSocket};

async fn socket_io() -> (ConformanceServer, Polling) {
    let server = ConformanceServer::start().await;
    let polling = Polling::new(server.addr, "/socket.io/");
    (server, polling)
}

mod engine_io_protocol {
    mod handshake {
        mod http_long_polling {
            use super::super::super::*;

            #[tokio::test]
            async fn should_successfully_open_a_session() {
                let (_server, polling) = socket_io().await;
                case::polling_successfully_opens_a_session(&polling).await;
            }

            #[tokio::test]
            async fn should_fail_with_an_invalid_eio_query_parameter() {
                let (_server, polling) = socket_io().await;
                case::polling_fails_with_an_invalid_eio_query_parameter(&polling).await;
            }

            #[tokio::test]
            async fn should_fail_with_an_invalid_transport_query_parameter() {
                let (_server, polling) = socket_io().await;
                case::polling_fails_with_an_invalid_transport_query_parameter(&polling).await;
            }

            #[tokio::test]
            async fn should_fail_with_an_invalid_request_method() {
                let (_server, polling) = socket_io().await;
                case::polling_fails_with_an_invalid_request_method(&polling).await;
            }
        }

        mod websocket {
            use super::super::super::*;

            #[tokio::test]
            async fn should_successfully_open_a_session() {
                let (_server, polling) = socket_io().await;
                case::websocket_successfully_opens_a_session(&polling).await;
            }

            #[tokio::test]
            async fn should_fail_with_an_invalid_eio_query_parameter() {
                let (_server, polling) = socket_io().await;
                case::websocket_fails_with_an_invalid_eio_query_parameter(&polling).await;
            }

            #[tokio::test]
            async fn should_fail_with_an_invalid_transport_query_parameter() {
                let (_server, polling) = socket_io().await;
                case::websocket_fails_with_an_invalid_transport_query_parameter(&polling).await;
            }
        }
    }

    mod heartbeat {
        mod http_long_polling {
            use super::super::super::*;

            #[tokio::test]
            async fn should_send_ping_pong_packets() {
                let (_server, polling) = socket_io().await;
                case::polling_sends_ping_pong_packets(&polling).await;
            }

            #[tokio::test]
            async fn should_close_the_session_upon_ping_timeout() {
                let (_server, polling) = socket_io().await;
                case::polling_closes_the_session_upon_ping_timeout(&polling).await;
            }
        }

        mod websocket {
            use super::super::super::*;

            #[tokio::test]
            async fn should_send_ping_pong_packets() {
                let (_server, polling) = socket_io().await;
                case::websocket_sends_ping_pong_packets(&polling).await;
            }

            #[tokio::test]
            async fn should_close_the_session_upon_ping_timeout() {
                let (_server, polling) = socket_io().await;
                case::websocket_closes_the_session_upon_ping_timeout(&polling).await;
            }
        }
    }

    mod close {
        mod http_long_polling {
            use super::super::super::*;

            #[tokio::test]
            async fn should_forcefully_close_the_session() {
                let (_server, polling) = socket_io().await;
                case::polling_forcefully_closes_the_session(&polling).await;
            }
        }

        mod websocket {
            use super::super::super::*;

            #[tokio::test]
            async fn should_forcefully_close_the_session() {
                let (_server, polling) = socket_io().await;
                case::websocket_forcefully_closes_the_session(&polling).await;
            }
        }
    }

    mod upgrade {
        use super::super::*;

        #[tokio::test]
        async fn should_successfully_upgrade_from_http_long_polling_to_websocket() {
            let (_server, polling) = socket_io().await;
            case::successfully_upgrades_from_http_long_polling_to_websocket(&polling, false).await;
        }

        #[tokio::test]
        async fn should_ignore_http_requests_with_same_sid_after_upgrade() {
            let (_server, polling) = socket_io().await;
            case::ignores_http_requests_with_same_sid_after_upgrade(&polling, false).await;
        }

        #[tokio::test]
        async fn should_ignore_websocket_connection_with_same_sid_after_upgrade() {
            let (_server, polling) = socket_io().await;
            case::ignores_websocket_connection_with_same_sid_after_upgrade(&polling, false).await;
        }
    }
}

/// A WebSocket session past its Engine.IO open packet.
async fn engine_session(polling: &Polling) -> RawSocket {
    let mut socket = polling.websocket("EIO=4&transport=websocket").await.expect("upgrade");
    let open = socket.next_text().await;
    assert!(open.starts_with('0'), "{open:?}");
    socket
}

/// The suite's `initSocketIOConnection`: connected to `/`, `auth` received.
async fn socket_io_connection(polling: &Polling) -> RawSocket {
    let mut socket = engine_session(polling).await;
    socket.send("40").await;
    let connected = socket.next_not_ping().await;
    assert!(matches!(&connected, Frame::Text(text) if text.starts_with("40")), "{connected:?}");
    assert_eq!(socket.next_not_ping().await, Frame::Text(r#"42["auth",{}]"#.to_owned()));
    socket
}

fn text(frame: Frame) -> String {
    match frame {
        Frame::Text(text) => text,
        other => panic!("expected a text message, got {other:?}"),
    }
}

/// Checks `40<namespace>{"sid":…}` (only a sid).
fn assert_connected(frame: Frame, prefix: &str) {
    let text = text(frame);
    let json = text.strip_prefix(prefix).unwrap_or_else(|| panic!("{text:?} does not start with {prefix:?}"));
    let handshake: tests::Value = serde_json::from_str(json).expect("CONNECT answer JSON");
    let keys: Vec<&String> = handshake.as_object().expect("an object").keys().collect();
    assert_eq!(keys, ["sid"]);
    assert!(handshake["sid"].is_string());
}

mod socket_io_protocol {
    mod connect {
        use super::super::*;

        async fn connects(packet: &str, prefix: &str, auth: &str) {
            let (_server, polling) = socket_io().await;
            let mut socket = engine_session(&polling).await;
            socket.send(packet).await;
            assert_connected(socket.next_not_ping().await, prefix);
            assert_eq!(text(socket.next_not_ping().await), auth);
        }

        #[tokio::test]
        async fn should_allow_connection_to_the_main_namespace() {
            connects("40", "40", r#"42["auth",{}]"#).await;
        }

        #[tokio::test]
        async fn should_allow_connection_to_the_main_namespace_with_a_payload() {
            connects(r#"40{"token":"123"}"#, "40", r#"42["auth",{"token":"123"}]"#).await;
        }

        #[tokio::test]
        async fn should_allow_connection_to_a_custom_namespace() {
            connects("40/custom,", "40/custom,", r#"42/custom,["auth",{}]"#).await;
        }

        #[tokio::test]
        async fn should_allow_connection_to_a_custom_namespace_with_a_payload() {
            connects(r#"40/custom,{"token":"abc"}"#, "40/custom,", r#"42/custom,["auth",{"token":"abc"}]"#)
                .await;
        }

        #[tokio::test]
        async fn should_disallow_connection_to_an_unknown_namespace() {
            let (_server, polling) = socket_io().await;
            let mut socket = engine_session(&polling).await;
            socket.send("40/random").await;
            assert_eq!(text(socket.next_not_ping().await), r#"44/random,{"message":"Invalid namespace"}"#);
        }

        #[tokio::test]
        async fn should_disallow_connection_with_an_invalid_handshake() {
            let (_server, polling) = socket_io().await;
            let mut socket = engine_session(&polling).await;
            socket.send("4abc").await;
            socket.expect_closed().await;
        }

        #[tokio::test]
        async fn should_close_the_connection_if_no_handshake_is_received() {
            let (_server, polling) = socket_io().await;
            let mut socket = engine_session(&polling).await;
            socket.expect_closed().await;
        }
    }

    mod disconnect {
        use super::super::*;

        #[tokio::test]
        async fn should_disconnect_from_the_main_namespace() {
            let (_server, polling) = socket_io().await;
            let mut socket = socket_io_connection(&polling).await;
            socket.send("41").await;
            assert_eq!(socket.next().await, Frame::Text("2".to_owned()), "nothing but the next ping");
        }

        #[tokio::test]
        async fn should_connect_then_disconnect_from_a_custom_namespace() {
            let (_server, polling) = socket_io().await;
            let mut socket = socket_io_connection(&polling).await;
            socket.send("40/custom").await;
            assert_connected(socket.next_not_ping().await, "40/custom,");
            assert_eq!(text(socket.next_not_ping().await), r#"42/custom,["auth",{}]"#);
            socket.send("41/custom").await;
            socket.send(r#"42["message","message to main namespace"]"#).await;
            assert_eq!(
                text(socket.next_not_ping().await),
                r#"42["message-back","message to main namespace"]"#
            );
        }
    }

    mod message {
        use super::super::*;

        #[tokio::test]
        async fn should_send_a_plain_text_packet() {
            let (_server, polling) = socket_io().await;
            let mut socket = socket_io_connection(&polling).await;
            socket.send(r#"42["message",1,"2",{"3":[true]}]"#).await;
            assert_eq!(text(socket.next_not_ping().await), r#"42["message-back",1,"2",{"3":[true]}]"#);
        }

        async fn binary_round_trip(packet: &str, answer: &str) {
            let (_server, polling) = socket_io().await;
            let mut socket = socket_io_connection(&polling).await;
            socket.send(packet).await;
            socket.send_binary(&[1, 2, 3]).await;
            socket.send_binary(&[4, 5, 6]).await;
            assert_eq!(text(socket.next_not_ping().await), answer);
            assert_eq!(socket.next_not_ping().await, Frame::Binary(vec![1, 2, 3]));
            assert_eq!(socket.next_not_ping().await, Frame::Binary(vec![4, 5, 6]));
        }

        #[tokio::test]
        async fn should_send_a_packet_with_binary_attachments() {
            binary_round_trip(
                r#"452-["message",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
                r#"452-["message-back",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
            )
            .await;
        }

        #[tokio::test]
        async fn should_send_a_plain_text_packet_with_an_ack() {
            let (_server, polling) = socket_io().await;
            let mut socket = socket_io_connection(&polling).await;
            socket.send(r#"42456["message-with-ack",1,"2",{"3":[false]}]"#).await;
            assert_eq!(text(socket.next_not_ping().await), r#"43456[1,"2",{"3":[false]}]"#);
        }

        #[tokio::test]
        async fn should_send_a_packet_with_binary_attachments_and_an_ack() {
            binary_round_trip(
                r#"452-789["message-with-ack",{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
                r#"462-789[{"_placeholder":true,"num":0},{"_placeholder":true,"num":1}]"#,
            )
            .await;
        }

        async fn closes_upon(packet: &str) {
            let (_server, polling) = socket_io().await;
            let mut socket = socket_io_connection(&polling).await;
            socket.send(packet).await;
            socket.expect_closed().await;
        }

        #[tokio::test]
        async fn should_close_the_connection_upon_invalid_format_unknown_packet_type() {
            closes_upon("4abc").await;
        }

        #[tokio::test]
        async fn should_close_the_connection_upon_invalid_format_invalid_payload_format() {
            closes_upon("42{}").await;
        }

        #[tokio::test]
        async fn should_close_the_connection_upon_invalid_format_invalid_ack_id() {
            closes_upon(r#"42abc["message-with-ack",1,"2",{"3":[false]}]"#).await;
        }
    }
}
