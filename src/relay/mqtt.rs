//! The seam between the relay and rumqttc's two clients, MQTT 3.1.1 and MQTT 5: one
//! [`Client`] to hand requests to, one [`Connection`] to poll, and what the connection reports
//! as [`Happened`], the same for both versions. The relay's state machine, poison watch and
//! PUBACK bookkeeping see only these; what differs between the versions (reason codes,
//! properties, session expiry) stays here.
//!
//! It owns no state of the relay's and never touches the journal.

use super::config::Protocol;
use rumqttc::v5::mqttbytes::{QoS as QoS5, v5 as v5b};
use rumqttc::{Outgoing, QoS};
use std::sync::Arc;
use std::time::Duration;

/// What a connection needs, whatever its MQTT version.
pub struct Options {
    pub protocol: Protocol,
    pub client_id: String,
    pub host: String,
    pub port: u16,
    pub keep_alive: Duration,
    /// Most QoS 1 publishes awaiting PUBACK.
    pub inflight: u16,
    /// Largest packet either way.
    pub max_packet: usize,
    /// The topic of the retained "offline" last will.
    pub will_topic: String,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub credentials: Option<(String, String)>,
    /// MQTT 5: how long the broker keeps the session after a disconnect; 0 starts and ends a
    /// clean one with every connection.
    pub session_expiry_secs: u32,
    /// Requests rumqttc may queue before `publish` answers that it is full.
    pub capacity: usize,
}

/// The MQTT 5 properties of an event's publish; ignored under 3.1.1.
#[derive(Debug, Default, Clone)]
pub struct Properties {
    /// Seconds the broker keeps the message for subscribers that have not received it.
    pub expiry_secs: Option<u32>,
    /// User properties (the CloudEvents attributes).
    pub user: Vec<(String, String)>,
}

/// The client half: requests handed to the connection.
pub enum Client {
    V311(rumqttc::AsyncClient),
    V5(rumqttc::v5::AsyncClient),
}

/// The connection half, polled for what happened. One per connection, owned by the relay's
/// task for its whole life: the boxes cost nothing per event.
pub enum Connection {
    V311(Box<rumqttc::EventLoop>),
    V5(Box<rumqttc::v5::EventLoop>),
}

/// What the connection reported.
#[derive(Debug)]
pub enum Happened {
    /// The broker accepted the connection; `session_present` when it kept an earlier session.
    Connected { session_present: bool },
    /// A publish went out on the wire with this packet id.
    Written(u16),
    /// The broker answered a publish. `refused` is its reason in words when it refused the
    /// message itself (an MQTT 5 reason code of 0x80 or more): the connection is fine, that
    /// message will not be taken.
    Acked { pkid: u16, refused: Option<String> },
    /// A message on a subscribed topic, not acknowledged until [`Client::ack`] is given `ack`.
    Message {
        topic: String,
        payload: Vec<u8>,
        ack: Ack,
    },
    /// The broker answered a subscription (SUBACK).
    Subscribed,
    /// The DISCONNECT went out.
    Disconnected,
    /// Nothing the relay acts on (PINGRESP, SUBACK, ...).
    Other,
}

/// What acknowledges a received message (its packet id and QoS, without its topic or payload).
#[derive(Debug)]
pub enum Ack {
    V311(Box<rumqttc::Publish>),
    V5(Box<v5b::Publish>),
}

/// The connection failed or was lost.
#[derive(Debug)]
pub struct Lost {
    pub error: String,
    /// The broker stopped answering (no PINGRESP): a hang, which blames no publish.
    pub hang: bool,
}

/// A client and its connection, not connected yet (the first poll connects).
pub fn open(o: Options) -> (Client, Connection) {
    let will = "offline";
    // The two versions' options are distinct types; what they share is built once here.
    let transport = o
        .tls
        .map(|tls| rumqttc::Transport::Tls(rumqttc::TlsConfiguration::Rustls(tls)));
    match o.protocol {
        Protocol::V311 => {
            let mut opts = rumqttc::MqttOptions::new(o.client_id, o.host, o.port);
            // Received messages are acknowledged by the relay once it has kept them.
            opts.set_keep_alive(o.keep_alive)
                .set_manual_acks(true)
                .set_clean_session(true)
                .set_inflight(o.inflight)
                .set_max_packet_size(o.max_packet, o.max_packet)
                .set_last_will(rumqttc::LastWill::new(
                    o.will_topic,
                    will,
                    QoS::AtLeastOnce,
                    true,
                ));
            if let Some(tls) = transport {
                opts.set_transport(tls);
            }
            if let Some((user, password)) = o.credentials {
                opts.set_credentials(user, password);
            }
            let (client, el) = rumqttc::AsyncClient::new(opts, o.capacity);
            (Client::V311(client), Connection::V311(Box::new(el)))
        }
        Protocol::V5 => {
            let mut opts = rumqttc::v5::MqttOptions::new(o.client_id, o.host, o.port);
            // A kept session is resumed (clean start off) only when one is asked for: the
            // broker then still holds the command subscription and what was sent to it.
            let keep = o.session_expiry_secs > 0;
            opts.set_keep_alive(o.keep_alive)
                .set_manual_acks(true)
                .set_clean_start(!keep)
                .set_session_expiry_interval(keep.then_some(o.session_expiry_secs))
                .set_outgoing_inflight_upper_limit(o.inflight)
                .set_max_packet_size(u32::try_from(o.max_packet).ok())
                .set_last_will(v5b::LastWill::new(
                    o.will_topic,
                    will,
                    QoS5::AtLeastOnce,
                    true,
                    None,
                ));
            if let Some(tls) = transport {
                opts.set_transport(tls);
            }
            if let Some((user, password)) = o.credentials {
                opts.set_credentials(user, password);
            }
            let (client, el) = rumqttc::v5::AsyncClient::new(opts, o.capacity);
            (Client::V5(client), Connection::V5(Box::new(el)))
        }
    }
}

impl Client {
    /// Queues a QoS 1 publish without waiting; an error when rumqttc's queue is full or gone.
    pub fn publish(
        &self,
        topic: String,
        retain: bool,
        payload: Vec<u8>,
        properties: Option<Properties>,
    ) -> Result<(), String> {
        let queued = match self {
            Client::V311(c) => c
                .try_publish(topic, QoS::AtLeastOnce, retain, payload)
                .map_err(|e| e.to_string()),
            Client::V5(c) => match properties {
                Some(p) => {
                    let props = v5b::PublishProperties {
                        message_expiry_interval: p.expiry_secs,
                        user_properties: p.user,
                        content_type: Some("application/json".into()),
                        ..Default::default()
                    };
                    c.try_publish_with_properties(topic, QoS5::AtLeastOnce, retain, payload, props)
                }
                None => c.try_publish(topic, QoS5::AtLeastOnce, retain, payload),
            }
            .map_err(|e| e.to_string()),
        };
        queued.map_err(|e| format!("cannot queue a publish: {e}"))
    }

    /// Queues a QoS 1 subscription.
    pub fn subscribe(&self, filter: String) -> Result<(), String> {
        match self {
            Client::V311(c) => c
                .try_subscribe(filter, QoS::AtLeastOnce)
                .map_err(|e| e.to_string()),
            Client::V5(c) => c
                .try_subscribe(filter, QoS5::AtLeastOnce)
                .map_err(|e| e.to_string()),
        }
    }

    /// Queues the acknowledgement of a received message.
    pub fn ack(&self, ack: &Ack) -> Result<(), String> {
        match (self, ack) {
            (Client::V311(c), Ack::V311(p)) => c.try_ack(p).map_err(|e| e.to_string()),
            (Client::V5(c), Ack::V5(p)) => c.try_ack(p).map_err(|e| e.to_string()),
            _ => Err("an acknowledgement for another MQTT version".into()),
        }
        .map_err(|e| format!("cannot queue an acknowledgement: {e}"))
    }

    /// Queues the DISCONNECT.
    pub fn disconnect(&self) -> Result<(), String> {
        match self {
            Client::V311(c) => c.try_disconnect().map_err(|e| e.to_string()),
            Client::V5(c) => c.try_disconnect().map_err(|e| e.to_string()),
        }
    }
}

impl Connection {
    /// The next thing that happened on the connection (connecting first, if it is not).
    pub async fn poll(&mut self) -> Result<Happened, Lost> {
        match self {
            Connection::V311(el) => match el.poll().await {
                Ok(ev) => Ok(from_v311(ev)),
                Err(e) => Err(Lost {
                    hang: matches!(
                        e,
                        rumqttc::ConnectionError::MqttState(rumqttc::StateError::AwaitPingResp)
                    ),
                    error: e.to_string(),
                }),
            },
            Connection::V5(el) => match el.poll().await {
                Ok(ev) => Ok(from_v5(ev)),
                Err(e) => Err(Lost {
                    hang: matches!(
                        e,
                        rumqttc::v5::ConnectionError::MqttState(
                            rumqttc::v5::StateError::AwaitPingResp
                        )
                    ),
                    error: e.to_string(),
                }),
            },
        }
    }
}

fn from_v311(ev: rumqttc::Event) -> Happened {
    use rumqttc::{Event, Packet};
    match ev {
        Event::Incoming(Packet::ConnAck(ack)) => Happened::Connected {
            session_present: ack.session_present,
        },
        Event::Outgoing(Outgoing::Publish(pkid)) => Happened::Written(pkid),
        Event::Incoming(Packet::PubAck(ack)) => Happened::Acked {
            pkid: ack.pkid,
            refused: None,
        },
        Event::Incoming(Packet::Publish(mut p)) => Happened::Message {
            topic: std::mem::take(&mut p.topic),
            payload: std::mem::take(&mut p.payload).to_vec(),
            ack: Ack::V311(Box::new(p)),
        },
        Event::Incoming(Packet::SubAck(_)) => Happened::Subscribed,
        Event::Outgoing(Outgoing::Disconnect) => Happened::Disconnected,
        _ => Happened::Other,
    }
}

fn from_v5(ev: rumqttc::v5::Event) -> Happened {
    use rumqttc::v5::Event;
    use v5b::Packet;
    match ev {
        Event::Incoming(Packet::ConnAck(ack)) => Happened::Connected {
            session_present: ack.session_present,
        },
        Event::Outgoing(Outgoing::Publish(pkid)) => Happened::Written(pkid),
        Event::Incoming(Packet::PubAck(ack)) => Happened::Acked {
            pkid: ack.pkid,
            refused: refusal(
                ack.reason,
                ack.properties.and_then(|p| p.reason_string).as_deref(),
            ),
        },
        Event::Incoming(Packet::Publish(mut p)) => Happened::Message {
            topic: String::from_utf8_lossy(&std::mem::take(&mut p.topic)).into_owned(),
            payload: std::mem::take(&mut p.payload).to_vec(),
            ack: Ack::V5(Box::new(p)),
        },
        Event::Incoming(Packet::SubAck(_)) => Happened::Subscribed,
        Event::Outgoing(Outgoing::Disconnect) => Happened::Disconnected,
        _ => Happened::Other,
    }
}

/// The words of a PUBACK reason code that refuses the message (MQTT 5, 3.4.2.1), with the
/// broker's reason string when it gave one; `None` for success. "No matching subscribers"
/// (0x10) is a success: the broker took the message.
fn refusal(reason: v5b::PubAckReason, detail: Option<&str>) -> Option<String> {
    use v5b::PubAckReason as R;
    let (code, words) = match reason {
        R::Success | R::NoMatchingSubscribers => return None,
        R::UnspecifiedError => (0x80, "unspecified error"),
        R::ImplementationSpecificError => (0x83, "implementation specific error"),
        R::NotAuthorized => (0x87, "not authorized"),
        R::TopicNameInvalid => (0x90, "topic name invalid"),
        R::PacketIdentifierInUse => (0x91, "packet identifier in use"),
        R::QuotaExceeded => (0x97, "quota exceeded"),
        R::PayloadFormatInvalid => (0x99, "payload format invalid"),
    };
    Some(match detail {
        Some(d) if !d.is_empty() => format!("{words} (0x{code:02x}: {d})"),
        _ => format!("{words} (0x{code:02x})"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use v5b::PubAckReason as R;

    #[test]
    fn puback_reasons_tell_a_refusal_from_a_success() {
        assert_eq!(refusal(R::Success, None), None);
        assert_eq!(
            refusal(R::NoMatchingSubscribers, None),
            None,
            "nobody listening is still taken"
        );
        assert_eq!(
            refusal(R::NotAuthorized, None).as_deref(),
            Some("not authorized (0x87)")
        );
        assert_eq!(
            refusal(R::QuotaExceeded, Some("queue full")).as_deref(),
            Some("quota exceeded (0x97: queue full)")
        );
        assert_eq!(
            refusal(R::PayloadFormatInvalid, Some("")).as_deref(),
            Some("payload format invalid (0x99)")
        );
    }
}
